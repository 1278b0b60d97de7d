"""step_head_triton (run in the Triton interpreter on CPU) against step_head_ref, its launcher checks, the dispatcher.

Every case draws a fresh seed and prints it on failure; EDGEPRM_TEST_SEED=<n> replays one.
"""

import os

if os.environ.get("EDGEPRM_TEST_COMPILED") != "1":  # set only by test_compiled_kernels_on_gpu's subprocess
    os.environ["TRITON_INTERPRET"] = "1"  # before triton or edgeprm's Triton kernels are imported

import importlib.util  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from edgeprm.kernels import step_head as sh  # noqa: E402
from edgeprm.kernels.step_head import (  # noqa: E402
    AGGREGATIONS,
    KERNEL_ENV,
    StepHeadWeights,
    step_head,
    step_head_ref,
    step_head_triton,
)

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

# (atol, rtol) of step_head_triton vs step_head_ref on the same inputs. fp32: accumulation order only. fp16: the
# kernel multiplies fp16 operands exactly and accumulates in fp32 like the reference (measured ~1e-7 apart); the bound
# is set by what PyTorch itself achieves in fp16 — its own half-precision head (F.linear in fp16, softmax) lands up
# to ~3e-4 from the fp32-accumulated reference at H = 40..1536. bf16 runs on GPU only (the interpreter gets it wrong).
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1e-2),
}
SENTINEL = -777.0  # poison for output buffers: never a reward or score, so an unwritten element cannot pass
FAMILIES = ("classifier", "value", "token_prob")


def fresh_seed() -> int:
    env = os.environ.get("EDGEPRM_TEST_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**31)


def assert_close(actual, expected, atol, rtol, what, seed):
    """allclose with NaN == NaN; on failure say how far off, how many, where, and the seed to replay."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().float().cpu(), expected.detach().float().cpu()
    both_nan = torch.isnan(a) & torch.isnan(e)
    ok = both_nan | torch.isclose(a, e, atol=atol, rtol=rtol)
    if bool(ok.all()):
        return
    bad = (~ok).nonzero().flatten()
    diff = (a - e).abs()
    finite = torch.isfinite(diff)
    max_diff = float(diff[finite].max()) if bool(finite.any()) else float("nan")
    first = bad[:8].tolist()
    pytest.fail(
        f"{what} (seed {seed}, replay with EDGEPRM_TEST_SEED={seed}): {bad.numel()}/{a.numel()} mismatches "
        f"(atol {atol}, rtol {rtol}); max abs diff {max_diff:.3e}; first bad indices {first}: "
        f"got {a[first].tolist()} want {e[first].tolist()}; NaN got/want {int(torch.isnan(a).sum())}/"
        f"{int(torch.isnan(e).sum())}, Inf got/want {int(torch.isinf(a).sum())}/{int(torch.isinf(e).sum())}"
    )


def make_head(family, h, gen, dtype=torch.float32):
    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    if family == "classifier":  # score.0 (h -> h) + ReLU, score.2 (h -> 2)
        return StepHeadWeights(rnd(2, h, scale=h**-0.5), rnd(2, scale=0.5), rnd(h, h, scale=h**-0.5), rnd(h, scale=0.5))
    if family == "value":  # reward_head Linear(h, 1)
        return StepHeadWeights(rnd(1, h, scale=h**-0.5), rnd(1, scale=0.5))
    return StepHeadWeights(rnd(2, h, scale=h**-0.5))  # token-prob: lm_head rows [bad, good], no bias


def make_batch(counts, h, gen, packed=False, final=False, dtype=torch.float32, t=24, strided=False):
    """Inputs for trajectories with `counts` steps each: (hidden, positions, offsets, final_positions, seq_offsets).

    Every trajectory with steps has its last step at its sequence's last token (T-1 when padded). Packed sequences
    have ragged lengths. `strided` makes hidden a non-contiguous view, so the kernel must gather through strides.
    """
    b = len(counts)
    t = max([t] + [n + 1 for n in counts])
    lengths = [t] * b if not packed else [max(n, 1) + int(torch.randint(0, t, (1,), generator=gen)) for n in counts]
    positions = []
    for n, length in zip(counts, lengths):
        if n:
            pos = torch.randperm(length - 1, generator=gen)[: n - 1].sort().values.tolist() + [length - 1]
            positions += pos
    offsets = torch.tensor([0] + torch.tensor(counts, dtype=torch.int64).cumsum(0).tolist(), dtype=torch.int64)
    positions = torch.tensor(positions, dtype=torch.int64)
    finals = torch.tensor([int(torch.randint(0, n, (1,), generator=gen)) for n in lengths]) if final else None
    rows = (sum(lengths),) if packed else (b, t)
    if strided:  # features every other element, rows padded: no unit stride anywhere
        hidden = torch.randn(*rows, 2 * h + 6, generator=gen)[..., : 2 * h : 2].to(dtype)
        assert hidden.stride(-1) == 2
    else:
        hidden = torch.randn(*rows, h, generator=gen).to(dtype)
    seq_offsets = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist()) if packed else None
    return hidden, positions, offsets, finals, seq_offsets


def poisoned_out(s, b, device="cpu"):
    return tuple(torch.full((n,), SENTINEL, dtype=torch.float32, device=device) for n in (s, b, b))


def check_against_ref(counts, family, h, packed=False, final=False, dtype=torch.float32, aggregations=AGGREGATIONS,
                      strided=False, t=24, device="cpu"):
    seed = fresh_seed()
    gen = torch.Generator().manual_seed(seed)
    head = make_head(family, h, gen, dtype).to(device)
    batch = make_batch(counts, h, gen, packed, final, dtype, t, strided)
    hidden, positions, offsets, finals, seq_offsets = (None if x is None else x.to(device) for x in batch)
    alpha = float(torch.rand((), generator=gen)) * 2
    atol, rtol = TOLERANCES[dtype]
    for agg in aggregations:
        want = step_head_ref(hidden, positions, offsets, head, agg, alpha, finals, seq_offsets)
        out = poisoned_out(positions.numel(), len(counts), device)
        got = step_head_triton(hidden, positions, offsets, head, agg, alpha, finals, seq_offsets, out=out)
        assert all(g is o for g, o in zip(got, out)), "out= buffers must be the ones returned"
        label = f"{family} H={h} {dtype} counts={counts} packed={packed} final={final} agg={agg}"
        for name, g, w in zip(("step_rewards", "trajectory_rewards", "scores"), got, want):
            assert g.dtype == torch.float32
            assert_close(g, w, atol, rtol, f"{label} {name}", seed)


# Ragged, with an empty trajectory in the middle, a 1-step one, and one longer than the finish kernel's 16-step
# chunk; 21 + 3 + 1 rows (+ 4 finals) span two 16-row M tiles.
RAGGED = [3, 0, 1, 21]


@needs_triton
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("h", [40, 72, 100])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("final", [False, True], ids=["no_final", "final"])
def test_matches_ref_fp32(family, h, packed, final):
    check_against_ref(RAGGED, family, h, packed, final)


@needs_triton
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_matches_ref_fp16(family, packed):
    check_against_ref(RAGGED, family, 72, packed, final=True, dtype=torch.float16)


@needs_triton
@pytest.mark.parametrize("counts", [[0], [0, 0, 0], [1], [1, 0], [40]], ids=["S0_B1", "S0_B3", "S1", "S1_then_0",
                                                                            "S40_B1"])
@pytest.mark.parametrize("family", ["classifier", "value"])
def test_small_and_degenerate_batches(counts, family):
    check_against_ref(counts, family, 40, final=False)
    check_against_ref(counts, family, 40, final=True, aggregations=("reasonflux",))


@needs_triton
@pytest.mark.parametrize("family", ["classifier", "token_prob"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_strided_hidden(family, packed):
    check_against_ref([2, 5], family, 40, packed, final=True, strided=True, aggregations=("mean",))


@needs_triton
def test_bit_reproducible():
    gen = torch.Generator().manual_seed(fresh_seed())
    head = make_head("classifier", 100, gen)
    hidden, positions, offsets, finals, _ = make_batch(RAGGED, 100, gen, final=True)
    first = step_head_triton(hidden, positions, offsets, head, "reasonflux", 1.0, finals)
    second = step_head_triton(hidden, positions, offsets, head, "reasonflux", 1.0, finals)
    for a, b in zip(first, second):
        assert torch.equal(a.nan_to_num(SENTINEL), b.nan_to_num(SENTINEL))


@pytest.mark.parametrize("impl", [step_head_ref, pytest.param(step_head_triton, marks=needs_triton)])
def test_no_trajectories(impl):
    head = make_head("value", 40, torch.Generator().manual_seed(0))
    empty = torch.zeros(0, dtype=torch.long)
    got = impl(torch.zeros(0, 4, 40), empty, torch.zeros(1, dtype=torch.long), head)
    assert [t.shape for t in got] == [(0,), (0,), (0,)]


# ---------------------------------------------------------------------------------------------- launcher errors


def _valid(family="classifier", h=40):
    gen = torch.Generator().manual_seed(0)
    hidden, positions, offsets, finals, _ = make_batch([2, 3], h, gen, final=True, t=8)
    return hidden, positions, offsets, make_head(family, h, gen), finals


@needs_triton
@pytest.mark.parametrize("mutate, exc, match", [
    (lambda a: {**a, "positions": torch.tensor([1, 8, 0, 1, 2])}, ValueError, r"step position 8 .* length 8"),
    (lambda a: {**a, "positions": torch.tensor([-1, 2, 0, 1, 2])}, ValueError, r"step position -1"),
    (lambda a: {**a, "final_positions": torch.tensor([0, 9])}, ValueError, r"final position 9 of trajectory 1"),
    (lambda a: {**a, "hidden": a["hidden"][None]}, ValueError, r"padded \[B, T, H\] or packed \[N, H\]"),
    (lambda a: {**a, "hidden": a["hidden"][..., :32]}, ValueError, r"hidden size 32 does not match the head's 40"),
    (lambda a: {**a, "hidden": a["hidden"][:1]}, ValueError, r"hidden has 1 rows but offsets describe 2"),
    (lambda a: {**a, "offsets": torch.tensor([0, 3, 4])}, ValueError, r"offsets must rise from 0 to len\(positions\)"),
    (lambda a: {**a, "positions": a["positions"].float()}, ValueError, r"positions must be int32 or int64"),
    (lambda a: {**a, "hidden": a["hidden"][0]}, ValueError, r"packed hidden \[N, H\] needs seq_offsets"),
    (lambda a: {**a, "aggregation": "median"}, ValueError, r"aggregation must be one of"),
    (lambda a: {**a, "hidden": a["hidden"].double()}, ValueError, r"hidden must be one of .* got torch.float64"),
    (lambda a: {**a, "hidden": a["hidden"].bfloat16()}, ValueError, r"bfloat16, which the Triton interpreter"),
    (lambda a: {**a, "positions": a["positions"].to("meta")}, ValueError, r"positions is on meta .* \.to\(hidden"),
    (lambda a: {**a, "out": poisoned_out(4, 2)}, ValueError, r"out step_rewards must be a contiguous float32 \[5\]"),
    (lambda a: {**a, "out": poisoned_out(5, 2)[:2]}, ValueError, r"out must be \(step_rewards, trajectory_rewards"),
])
def test_launcher_rejects(mutate, exc, match):
    hidden, positions, offsets, head, finals = _valid()
    args = mutate({"hidden": hidden, "positions": positions, "offsets": offsets, "head": head,
                   "final_positions": finals, "aggregation": "mean"})
    with pytest.raises(exc, match=match):
        step_head_triton(**args)


@needs_triton
def test_cpu_tensors_need_the_interpreter():
    with pytest.raises(RuntimeError, match=r"set TRITON_INTERPRET=1 .*EDGEPRM_KERNEL=ref"):
        sh.check_runnable(torch.device("cpu"), interpreted=False)
    sh.check_runnable(torch.device("cpu"), interpreted=True)
    sh.check_runnable(torch.device("cuda"), interpreted=False)


def test_missing_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sh, "triton", None)
    hidden, positions, offsets, head, finals = _valid()
    with pytest.raises(RuntimeError, match=r"needs triton .* EDGEPRM_KERNEL=ref"):
        step_head_triton(hidden, positions, offsets, head)


# ---------------------------------------------------------------------------------------------------- dispatcher


def _spy(monkeypatch):
    calls = []

    def fake_triton(*args):
        calls.append(args)
        return step_head_ref(*args)

    monkeypatch.setattr(sh, "step_head_triton", fake_triton)
    return calls


@pytest.mark.parametrize("env, device, want", [
    (None, "cpu", "ref"), (None, "cuda", "triton"), ("ref", "cuda", "ref"), ("triton", "cpu", "triton"),
    (" Triton ", "cpu", "triton"),
])
def test_select_impl(monkeypatch, env, device, want):
    if env is None:
        monkeypatch.delenv(KERNEL_ENV, raising=False)
    else:
        monkeypatch.setenv(KERNEL_ENV, env)
    assert sh.select_impl(torch.device(device)) == want


def test_dispatcher_ref_on_cpu(monkeypatch):
    monkeypatch.setenv(KERNEL_ENV, "ref")
    calls = _spy(monkeypatch)
    hidden, positions, offsets, head, finals = _valid()
    got = step_head(hidden, positions, offsets, head, "min", 1.0, finals)
    assert not calls
    for g, w in zip(got, step_head_ref(hidden, positions, offsets, head, "min", 1.0, finals)):
        assert torch.equal(g, w)


@needs_triton
def test_dispatcher_triton_on_cpu_runs_the_kernel(monkeypatch):
    monkeypatch.setenv(KERNEL_ENV, "triton")
    hidden, positions, offsets, head, finals = _valid()
    got = step_head(hidden, positions, offsets, head, "prod", 1.0, finals)
    want = step_head_ref(hidden, positions, offsets, head, "prod", 1.0, finals)
    for name, g, w in zip(("step_rewards", "trajectory_rewards", "scores"), got, want):
        assert_close(g, w, *TOLERANCES[torch.float32], f"dispatcher {name}", 0)
    calls = _spy(monkeypatch)
    step_head(hidden, positions, offsets, head)
    assert len(calls) == 1


def test_dispatcher_rejects_unknown_kernel(monkeypatch):
    monkeypatch.setenv(KERNEL_ENV, "cuda")
    hidden, positions, offsets, head, _ = _valid()
    with pytest.raises(ValueError, match=r"EDGEPRM_KERNEL must be 'triton' or 'ref'; got 'cuda'"):
        step_head(hidden, positions, offsets, head)


# ------------------------------------------------------------------------------------------------- real GPU path

_GPU_CHECK = """
import torch, sys
sys.path.insert(0, "tests/kernels")
from test_step_head import check_against_ref, FAMILIES
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for family in FAMILIES:
        for packed in (False, True):
            check_against_ref([3, 0, 1, 70], family, 1000, packed, final=True, dtype=dtype, t=300, device="cuda")
print("ok")
"""


@pytest.mark.skipif(not (HAS_TRITON and torch.cuda.is_available()), reason="needs a CUDA GPU (compiled kernels)")
def test_compiled_kernels_on_gpu():
    # A fresh process without TRITON_INTERPRET, so the kernels are compiled for the GPU (and autotuned).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"EDGEPRM_TEST_COMPILED": "1"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", _GPU_CHECK], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


def test_head_reference_takes_rows_of_any_leading_shape():
    """head_rewards_ref on [B, S, H] (how the ONNX graph calls it) equals it on the flattened [B * S, H] rows."""
    from edgeprm.kernels.step_head import head_logits_ref, head_rewards_ref, normalise_ref

    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    for family in FAMILIES:
        head = make_head(family, 41, g)
        x = torch.randn(3, 7, 41, generator=g)
        flat = head_rewards_ref(x.reshape(-1, 41), head).reshape(3, 7)
        torch.testing.assert_close(head_rewards_ref(x, head), flat, atol=0, rtol=0, msg=f"seed {seed}")
        torch.testing.assert_close(normalise_ref(head_logits_ref(x, head)), flat, atol=0, rtol=0)
