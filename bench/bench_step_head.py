"""Step head benchmark: the reference recipe (head on every token, then pick the steps) vs edgeprm's gather-then-head.

Implementations timed for each case:
- recipe:  what users write from the model cards: run the head over all B*T tokens (token-prob: the full LM head,
           [B, T, V] logits), normalise, mask, and pull the S step rewards out in a Python loop;
- gather:  edgeprm's `step_head_ref` on CPU: gather the S rows, apply only the head (token-prob: two LM-head rows);
- triton:  edgeprm's `step_head_triton` compiled on CUDA (bf16), when a GPU is present; with one, the recipe is also
           timed on CUDA so the speedup compares like with like.

Every row also states the FLOPs and bytes the implementation must move (GPU, 2-byte elements) and the time those
imply on datasheet figures of three GPUs, max(FLOPs / peak, bytes / bandwidth): a lower bound on paper, not a
measurement. Peak memory is measured: resident-set high-water mark above the starting RSS on CPU, the allocator's
peak on CUDA.

    python bench/bench_step_head.py [--quick]                  # table
    pytest bench/bench_step_head.py --benchmark-only           # pytest-benchmark (quick cases; EDGEPRM_BENCH_FULL=1)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from edgeprm.kernels.step_head import StepHeadWeights, step_head_ref, step_head_triton

HAS_CUDA = torch.cuda.is_available()
# name: (dense fp16/bf16 tensor FLOP/s, memory bandwidth B/s), from the vendors' datasheets
GPUS = {"T4": (65e12, 320e9), "RTX 4090": (165e12, 1008e9), "H100 SXM": (989e12, 3.35e12)}
GPU_ELEM_BYTES = 2
VOCAB = 151_936  # Qwen2 vocabulary: the token-prob recipe's LM head width


@dataclass(frozen=True)
class Case:
    family: str  # "classifier" (7B step-classifier head, H x H + H x 2), "value" (1.5B, H x 1), "token_prob"
    h: int
    b: int
    t: int
    s: int  # steps per trajectory

    def __str__(self):
        return f"{self.family}-H{self.h}-B{self.b}-T{self.t}-S{self.s}"


def _grid(family, h, ts, ss, bs):
    return [Case(family, h, b, t, s) for t in ts for s in ss for b in bs]


FULL_CASES = (_grid("classifier", 3584, (1024, 4096), (10, 50), (1, 8)) + [Case("classifier", 3584, 1, 4096, 30)]
              + _grid("value", 1536, (1024, 4096), (10, 50), (1, 8)) + _grid("token_prob", 1536, (1024, 4096), (10, 50),
                                                                               (1,)))
QUICK_CASES = ([Case("classifier", 3584, 1, 1024, 10), Case("classifier", 3584, 8, 1024, 50),
                Case("classifier", 3584, 1, 4096, 30)]
               + [Case("value", 1536, b, t, 50) for t, b in ((1024, 1), (4096, 8))]
               + [Case("token_prob", 1536, 1, 1024, 30)])
HEADLINE = Case("classifier", 3584, 1, 4096, 30)  # the figure the issue asks for: CPU speedup at T=4096, S=30, 7B


@dataclass
class Inputs:
    hidden: torch.Tensor  # [B, T, H]
    positions: torch.Tensor  # [B*S] flat, per trajectory sorted, last at T-1
    offsets: torch.Tensor  # [B + 1]
    sep_mask: torch.Tensor  # [B, T] bool: where the step separators are, as the recipe sees them
    head: StepHeadWeights
    lm_head: torch.Tensor | None  # [V, H] for token-prob
    good_bad: tuple[int, int] = (0, 0)


def make_inputs(case: Case, device="cpu", dtype=torch.float32, seed=0) -> Inputs:
    gen = torch.Generator().manual_seed(seed)
    h = case.h

    def rnd(*shape):
        return (torch.randn(*shape, generator=gen) * shape[-1] ** -0.5).to(device=device, dtype=dtype)

    hidden = torch.randn(case.b, case.t, h, generator=gen).to(device=device, dtype=dtype)
    last = torch.tensor([case.t - 1])
    per = [torch.cat([torch.randperm(case.t - 1, generator=gen)[: case.s - 1].sort().values, last])
           for _ in range(case.b)]
    positions = torch.cat(per).to(device)
    offsets = torch.arange(case.b + 1, device=device) * case.s
    sep_mask = torch.zeros(case.b, case.t, dtype=torch.bool)
    for i, p in enumerate(per):
        sep_mask[i, p] = True
    lm_head, good_bad = None, (0, 0)
    if case.family == "classifier":
        head = StepHeadWeights(rnd(2, h), rnd(2), rnd(h, h), rnd(h))
    elif case.family == "value":
        head = StepHeadWeights(rnd(1, h), rnd(1))
    else:
        lm_head = rnd(VOCAB, h)
        good_bad = (10, 11)
        head = StepHeadWeights(lm_head[[good_bad[1], good_bad[0]]])  # [bad, good]: class 1 = good
    return Inputs(hidden, positions, offsets, sep_mask.to(device), head, lm_head, good_bad)


def recipe(inp: Inputs) -> list[list[float]]:
    """The reference recipe as users write it: head over all T tokens, normalise, mask, loop out the steps."""
    head, b = inp.head, inp.hidden.shape[0]
    if inp.lm_head is not None:  # token-prob: the model's forward computes the full [B, T, V] logits
        logits = F.linear(inp.hidden, inp.lm_head)
        scores = logits[:, :, list(inp.good_bad)].softmax(dim=-1)[:, :, 0]
        return [scores[i][inp.sep_mask[i]].tolist() for i in range(b)]
    if head.w1 is not None:  # step-classifier: score head on every token, softmax, mask, filter the nonzeros
        logits = F.linear(torch.relu(F.linear(inp.hidden, head.w1, head.b1)), head.w2, head.b2)
        probs = logits.softmax(dim=-1) * inp.sep_mask.unsqueeze(-1)
        out = []
        for i in range(b):
            sample = probs[i]
            out.append(sample[sample != 0].view(-1, 2)[:, 1].tolist())
        return out
    rewards = torch.sigmoid(F.linear(inp.hidden, head.w2, head.b2))[..., 0]  # value head on every token
    return [[rewards[i, p].item() for p in inp.sep_mask[i].nonzero().flatten().tolist()] for i in range(b)]


def gather_then_head(inp: Inputs, impl=step_head_ref) -> list[list[float]]:
    steps, _, _ = impl(inp.hidden, inp.positions, inp.offsets, inp.head, "mean")
    s = inp.positions.numel() // inp.hidden.shape[0]
    flat = steps.tolist()
    return [flat[i : i + s] for i in range(0, len(flat), s)]


def triton_head(inp: Inputs) -> list[list[float]]:
    return gather_then_head(inp, step_head_triton)


IMPLS = {"recipe": recipe, "gather": gather_then_head, "triton": triton_head}


def paper_cost(case: Case, impl: str, elem=GPU_ELEM_BYTES) -> tuple[float, float]:
    """(FLOPs, bytes) the implementation must move at least, counting every tensor it writes as read back once."""
    bt, h = case.b * case.t, case.h
    c = 1 if case.family == "value" else 2
    if impl == "recipe":
        if case.family == "token_prob":
            return 2 * bt * h * VOCAB, elem * (bt * h + VOCAB * h + 2 * bt * VOCAB)
        flops = 2 * bt * h * c + (2 * bt * h * h if case.family == "classifier" else 0)
        inter = 2 * bt * h if case.family == "classifier" else 0  # the [B, T, H] ReLU output, written then read
        return flops, elem * (bt * h + inter + (h * h if case.family == "classifier" else 0) + c * h) + 8 * bt * c
    r = case.b * case.s
    flops = 2 * r * h * c + (2 * r * h * h if case.family == "classifier" else 0)
    return flops, elem * (r * h + (h * h if case.family == "classifier" else 0) + c * h) + 8 * r + 4 * (r + 2 * case.b)


def paper_us(flops, nbytes, gpu):
    peak, bw = GPUS[gpu]
    return max(flops / peak, nbytes / bw) * 1e6


def _proc_bytes(key):
    return int(re.search(rf"{key}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def measure(fn, inp, device, budget_s, max_reps=20):
    """(median seconds, samples, peak bytes above the start). The first (warm-up) call measures peak memory; it is
    the only sample when it alone takes over 5x the budget (the heaviest recipe rows run once)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # reset this process's RSS high-water mark (Linux)
            f.write("5")
        base = _proc_bytes("VmRSS")
    t0 = time.perf_counter()
    fn(inp)
    sync()
    first = time.perf_counter() - t0
    peak = max(0, (torch.cuda.max_memory_allocated() if device == "cuda" else _proc_bytes("VmHWM")) - base)
    if first > 5 * budget_s:
        return first, 1, peak
    times = []
    for _ in range(max(1, min(max_reps, int(budget_s / max(first, 1e-6))))):
        t0 = time.perf_counter()
        fn(inp)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times), peak


def run_case(case: Case, budget_s: float):
    """Rows for one case: dicts with impl, device, median_ms, n, peak_mb, speedup, gflop, mb, paper_us."""
    rows = []
    plans = [("recipe", "cpu"), ("gather", "cpu")] + ([("recipe", "cuda"), ("triton", "cuda")] if HAS_CUDA else [])
    inputs = {}
    for impl, device in plans:
        if device not in inputs:
            inputs.clear()  # one device's inputs at a time: the token-prob LM head alone is 0.9 GB in fp32
            inputs[device] = make_inputs(case, device, torch.float32 if device == "cpu" else torch.bfloat16)
        med, n, peak = measure(IMPLS[impl], inputs[device], device, budget_s)
        flops, nbytes = paper_cost(case, impl)
        rows.append({"impl": impl, "device": device, "median_ms": med * 1e3, "n": n, "peak_mb": peak / 1e6,
                     "gflop": flops / 1e9, "mb": nbytes / 1e6, **{g: paper_us(flops, nbytes, g) for g in GPUS}})
    for r in rows:
        base = next(x for x in rows if x["impl"] == "recipe" and x["device"] == r["device"])
        r["speedup"] = base["median_ms"] / r["median_ms"]
    if not HAS_CUDA:
        flops, nbytes = paper_cost(case, "triton")
        rows.append({"impl": "triton", "device": "skipped: no CUDA GPU", "gflop": flops / 1e9, "mb": nbytes / 1e6,
                     **{g: paper_us(flops, nbytes, g) for g in GPUS}})
    return rows


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(results):
    head = (f"{'case':<34} {'impl':<7} {'device':<21} {'median ms':>10} {'n':>3} {'speedup':>8} {'peak MB':>9} "
            f"{'GFLOP':>9} {'MB moved':>9} " + " ".join(f"{g + ' us':>12}" for g in GPUS))
    print(head)
    print("-" * len(head))
    for case, rows in results:
        for r in rows:
            print(f"{str(case):<34} {r['impl']:<7} {r['device']:<21} {_fmt(r.get('median_ms'), '10.2f')} "
                  f"{_fmt(r.get('n'), '3d')} {_fmt(r.get('speedup'), '7.1f') + ('x' if 'speedup' in r else ''):>8} "
                  f"{_fmt(r.get('peak_mb'), '9.1f')} {r['gflop']:9.3f} {r['mb']:9.2f} "
                  + " ".join(f"{r[g]:12.1f}" for g in GPUS))


def memory_report(results):
    print("\nToken-prob memory: the recipe's [B, T, V] logits vs edgeprm's allocations")
    for case, rows in results:
        if case.family != "token_prob":
            continue
        logits = case.b * case.t * VOCAB * 4
        ours = 4 * case.b * case.s * (case.h + 2) + 4 * (case.b * case.s + 2 * case.b)  # rows, logits, outputs
        measured = {r["impl"]: r.get("peak_mb") for r in rows if r["device"] == "cpu"}
        print(f"  {case}: recipe logits {logits / 1e9:.2f} GB on paper (fp32), measured peak "
              f"{_fmt(measured.get('recipe'), '.0f')} MB; edgeprm allocates {ours / 1e3:.0f} kB on paper, measured "
              f"peak {_fmt(measured.get('gather'), '.1f')} MB")
    for t in (1024, 4096):
        print(f"  on paper, B=1 T={t}: [T, V] fp32 logits = {t * VOCAB * 4 / 1e9:.2f} GB, bf16 = "
              f"{t * VOCAB * 2 / 1e9:.2f} GB; edgeprm at S=50: {4 * 50 * (1536 + 2) / 1e3:.0f} kB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases and a smaller time budget per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases, budget = (QUICK_CASES, 1.0) if args.quick else (FULL_CASES, 3.0)
    # CPU timings of the small rows swing by 100x when another process holds a core (thread-pool barriers wait on
    # it), so the table says how busy the machine was.
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CPU fp32, load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
          + (f", GPU {torch.cuda.get_device_name()} bf16" if HAS_CUDA else ", no CUDA GPU (triton rows on paper only)"))
    results = [(case, run_case(case, budget)) for case in cases]
    print_table(results)
    memory_report(results)
    rows = dict(results)[HEADLINE]
    recipe_ms, gather_ms = (next(r["median_ms"] for r in rows if r["impl"] == i and r["device"] == "cpu")
                            for i in ("recipe", "gather"))
    print(f"\nHeadline: 7B step-classifier head, T={HEADLINE.t}, S={HEADLINE.s}, B={HEADLINE.b}, CPU: recipe "
          f"{recipe_ms:.1f} ms, gather-then-head {gather_ms:.2f} ms -> {recipe_ms / gather_ms:.0f}x speedup")


# ------------------------------------------------------------------------------------------- pytest-benchmark

PYTEST_CASES = FULL_CASES if os.environ.get("EDGEPRM_BENCH_FULL") == "1" else QUICK_CASES


@pytest.mark.parametrize("impl, device", [("recipe", "cpu"), ("gather", "cpu"), ("recipe", "cuda"),
                                          ("triton", "cuda")], ids=lambda x: x)
@pytest.mark.parametrize("case", PYTEST_CASES, ids=str)
def test_step_head(benchmark, case, impl, device):
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("needs a CUDA GPU: the Triton kernel is timed compiled, never in the interpreter")
    inp = make_inputs(case, device, torch.float32 if device == "cpu" else torch.bfloat16)
    flops, nbytes = paper_cost(case, impl)
    benchmark.extra_info.update({"gflop": flops / 1e9, "mb_moved": nbytes / 1e6,
                                 **{f"paper_us_{g}": paper_us(flops, nbytes, g) for g in GPUS}})
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    heavy = impl == "recipe" and device == "cpu" and (case.family == "token_prob" or case.b * case.t >= 8192)
    benchmark.pedantic(lambda: (IMPLS[impl](inp), sync()), rounds=2 if heavy else 10, warmup_rounds=1)


if __name__ == "__main__":
    main()
