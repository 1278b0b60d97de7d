"""Quantized modules against their references, and backbones quantized while they load."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import edgeprm
from edgeprm.backends.memory import weight_bytes
from edgeprm.cli import main
from edgeprm.quant.checkpoint import QUANT_MANIFEST as MANIFEST
from edgeprm.quant.config import QUANT_SCHEMES as SCHEMES
from edgeprm.quant.config import QuantConfig
from edgeprm.quant.modules import (
    CastEmbedding,
    FbgemmInt8Linear,
    Int8Embedding,
    build_linear,
    int8_dot_saturates,
    quantize_backbone,
)
from edgeprm.quant.primitives import (
    dequantize_int8_rowwise,
    dequantize_nf4,
    quantize_int8_rowwise,
    quantize_weight,
)

from .shared import PATHS, QUANT_MODULES, ROWS, linears


def test_fbgemm_linear_is_torch_dynamic_quantized_linear_per_token():
    """Each token through torch's own dynamic int8 Linear on its own, scaled to absmax 1: the same as the batched
    call up to the kernel's shared input range; and one outlier token no longer coarsens the others."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    w, b, x = torch.randn(72, 41), torch.randn(72), torch.randn(3, 17, 41)
    q, scale = quantize_int8_rowwise(w)
    ours = FbgemmInt8Linear(q, scale, b, reduce_range=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = DynamicLinear(41, 72, dtype=torch.qint8)
        ref.set_weight_bias(torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(72).long(), 0),
                            None)
    rows = x.reshape(-1, 41)
    s = rows.abs().amax(-1, keepdim=True)
    per_token = torch.cat([ref(r[None] / t) * t for r, t in zip(rows, s)]) + b
    got = ours(x).reshape(-1, 72)
    assert (got - per_token).abs().max() <= 0.04 * per_token.abs().max(), (got - per_token).abs().max()
    assert ours(x.bfloat16()).dtype == torch.bfloat16  # any float input; torch's module takes fp32 only
    full = FbgemmInt8Linear(q, scale, b, reduce_range=int8_dot_saturates())
    exact = x @ dequantize_int8_rowwise(q, scale).T + b
    assert (full(x) - exact).abs().max() <= 0.05 * exact.abs().max()  # activation rounding only
    # A token 1000x larger than the rest: the others keep their own precision (a per-tensor range would not).
    loud = x.clone()
    loud[0, 0] *= 1000
    err = (full(loud)[1:] - exact[1:]).abs().amax(-1) / exact[1:].abs().amax(-1)
    assert err.max() <= 0.05, err.max()


@pytest.mark.parametrize("engine", ["fbgemm", "onednn"])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_two_digit_activations_are_exact_to_the_digit_grid_and_batch_invariant(engine, reduce_range):
    """digits=2: each token as two int8 digits in one GEMM; the result is within the digit grid's rounding,
    x / absmax to 1 / (4 top^2), of the dequantized weights' exact product (fresh random inputs, an outlier channel),
    and a token's output does not depend on its batchmates (the kernel's input range is pinned)."""
    seed = int(torch.randint(0, 2**31, ()).item())
    g = torch.Generator().manual_seed(seed)
    k, n = 96, 80
    q, scale = quantize_int8_rowwise(torch.randn(n, k, generator=g))
    x = torch.randn(3, 11, k, generator=g)
    x[..., 5] *= 60.0
    lin = FbgemmInt8Linear(q, scale, None, reduce_range, engine=engine, digits=2)
    w = dequantize_int8_rowwise(q, scale).double()
    exact = x.double() @ w.T
    top = 63 if reduce_range else 127
    bound = x.double().abs().amax(-1, keepdim=True) / (4 * top**2) * w.abs().sum(1) + 1e-5 * exact.abs().amax()
    err = (lin(x).double() - exact).abs()
    assert (err <= bound).all(), (seed, (err / bound).max())
    one = x[0, :1] + torch.randn(1, k, generator=g)
    alone, batched = lin(one), lin(torch.cat([one, 1000 * x[1]]))[:1]
    assert torch.allclose(alone, batched, rtol=1e-5, atol=1e-5 * alone.abs().max().item()), seed
    one_digit = FbgemmInt8Linear(q, scale, None, reduce_range, engine=engine)
    assert err.mean() < (one_digit(x).double() - exact).abs().mean() / 20, seed  # what the second digit buys


@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
@pytest.mark.parametrize("shape", [(64, 128), (41, 72)])  # bitsandbytes' packed NF4 CPU kernel; its fallback
def test_quantized_linear_close_to_its_dequantized_weights(scheme, kernel, shape):
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(shape, generator=g) / shape[1] ** 0.5, torch.randn(shape[0], generator=g) * 0.1
    x = torch.randn(2, 9, shape[1], generator=g)
    storage = SCHEMES[scheme].storage
    stored = quantize_weight(storage, w)
    m = build_linear(kernel, stored, b, shape, QuantConfig(scheme, kernel), torch.device("cpu"))
    deq = dequantize_nf4(stored[""], {k[1:]: v for k, v in stored.items() if k}) if storage == "nf4" else \
        dequantize_int8_rowwise(stored[""], stored["_scale"])
    ref = x @ deq.float().T + b
    with torch.inference_mode():
        y = m(x)
    assert y.shape == ref.shape and y.dtype == x.dtype
    tol = {"fbgemm": 0.03, "bnb-int8": 0.03, "bnb-nf4": 0.02}[kernel]  # activation rounding (bf16 for NF4)
    assert (y - ref).abs().max() <= tol * ref.abs().max(), (y - ref).abs().max()


@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_load_quantizes_every_backbone_linear(checkpoints, scorers, family, scheme, kernel):
    s = edgeprm.load(checkpoints[family], quantization=QuantConfig(scheme, kernel), device="cpu")
    assert s.quantization == scheme
    types = linears(s)
    assert len(types) == 14 and all(issubclass(t, QUANT_MODULES[kernel]) for t in types.values()), types
    ref, got = scorers[family].score_batch(ROWS), s.score_batch(ROWS)
    for r, q in zip(ref, got):
        assert len(q.step_rewards) == len(r.step_rewards) and q.id == r.id
        assert max(abs(a - b) for a, b in zip(r.step_rewards, q.step_rewards)) < 0.05
        assert abs(r.score - q.score) < 0.1  # reasonflux adds two rewards for the value head


def test_keep_patterns_leave_layers_in_full_precision(checkpoints):
    s = edgeprm.load(checkpoints["value-head"], quantization=QuantConfig("int8", keep=("layers.0.*",)), device="cpu")
    kept = {n for n, t in linears(s).items() if t is nn.Linear}
    assert kept == {f"layers.0.{m}" for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                              "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert s.backbone.get_submodule("layers.0.mlp.up_proj").weight.dtype == torch.float32


def test_bf16_checkpoint_keeps_its_embedding_table_in_bf16(checkpoints, tmp_path):
    src = checkpoints["value-head"]
    dst = tmp_path / "bf16"
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(src / "model.safetensors").items()},
              str(dst / "model.safetensors"))
    fp32 = edgeprm.load(dst, device="cpu")
    s = edgeprm.load(dst, quantization="int8", device="cpu")
    emb = s.backbone.embed_tokens
    assert isinstance(emb, CastEmbedding) and emb.weight.dtype == torch.bfloat16
    ids = torch.tensor([[1, 5, 9]])
    assert torch.equal(emb(ids), fp32.backbone.embed_tokens(ids))  # the exact rows of the fp32 upcast
    assert weight_bytes(s)["embeddings"] * 2 == weight_bytes(fp32)["embeddings"]


def test_int8_embeddings_option(checkpoints, scorers, tmp_path):
    fp32 = scorers["value-head"]
    s = edgeprm.load(checkpoints["value-head"], quantization=QuantConfig("int8", embeddings="int8"), device="cpu")
    emb = s.backbone.embed_tokens
    assert isinstance(emb, Int8Embedding) and emb.weight.dtype == torch.int8
    q, scale = quantize_int8_rowwise(fp32.backbone.embed_tokens.weight)
    ids = torch.tensor([[0, 7, 300], [5, 5, 1]])
    assert torch.equal(emb(ids), dequantize_int8_rowwise(q, scale)[ids])  # exactly q * scale per row
    assert weight_bytes(s)["embeddings"] == q.numel() + 4 * q.shape[0]
    out = tmp_path / "q"
    assert main(["quantize", str(checkpoints["value-head"]), str(out), "--quantization", "int8",
                 "--embeddings", "int8"]) == 0
    assert json.loads((out / MANIFEST).read_text())["embeddings"] == "int8"
    stored = edgeprm.load(out, device="cpu")
    assert isinstance(stored.backbone.embed_tokens, Int8Embedding)
    assert [r.score for r in stored.score_batch(ROWS)] == [r.score for r in s.score_batch(ROWS)]
    with pytest.raises(ValueError, match="embeddings must be one of \\('keep', 'int8'\\); got 'int4'"):
        QuantConfig("int8", embeddings="int4")


def test_quantize_backbone_in_place_matches_quantize_while_loading(checkpoints):
    # In place there is no checkpoint to calibrate on: plain rounding, as loading does without smoothing.
    ref = edgeprm.load(checkpoints["step-classifier"], quantization=QuantConfig("int8", smooth=False), device="cpu")
    s = edgeprm.load(checkpoints["step-classifier"], device="cpu")
    quantize_backbone(s.backbone, "int8")
    assert all(t is FbgemmInt8Linear for t in linears(s).values())
    assert [r.step_rewards for r in s.score_batch(ROWS)] == [r.step_rewards for r in ref.score_batch(ROWS)]


def test_int8_batch_composition_moves_scores_within_quantization_error(checkpoints):
    """fbgemm quantizes activations per tensor per call: batchmates share a scale (edgeprm/quant/modules.py)."""
    s = edgeprm.load(checkpoints["step-classifier"], quantization="int8", device="cpu")
    alone = [s.score_batch([r])[0] for r in ROWS]
    together = s.score_batch(ROWS)
    worst = max(abs(a - b) for x, y in zip(alone, together) for a, b in zip(x.step_rewards, y.step_rewards))
    assert worst < 0.02


@pytest.mark.parametrize("gemm", ["mkl", "onednn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nf4_dense_linear_is_the_dense_product_of_its_dequantized_weights(gemm, dtype, monkeypatch):
    """nf4-dense expands NF4 chunk by chunk (several chunks here) before each GEMM, on either fp32 engine: the
    result is x @ dequant(W).T + b to fp32 rounding."""
    from edgeprm.kernels.cpu_linear import available
    from edgeprm.quant.modules import Nf4DenseLinear

    if gemm == "onednn" and not available():
        pytest.skip("this torch build has no oneDNN fp32 Linear")
    out_f, in_f = 200, 192
    w, b = torch.randn(out_f, in_f) / in_f ** 0.5, torch.randn(out_f) * 0.1
    x = torch.randn(3, 7, in_f).to(dtype)
    stored = quantize_weight("nf4", w)
    monkeypatch.setattr(Nf4DenseLinear, "CHUNK_ELEMENTS", 64 * in_f)  # 64 rows a chunk: 4 chunks, the last short
    m = build_linear("nf4-dense", stored, b, (out_f, in_f), QuantConfig("int4", "nf4-dense"), torch.device("cpu"))
    m.gemm = gemm
    deq = m.dequantize(torch.float32).clone()  # the whole matrix at once (equal to bitsandbytes' dequantize_4bit)
    assert (deq - w).abs().max() < 0.2 * w.abs().max()  # and a 4-bit rounding of w
    with torch.inference_mode():
        y = m(x)
    ref = x.float() @ deq.T + b
    assert y.shape == ref.shape and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: x and the expanded chunk rounded to bf16
    assert (y.float() - ref).abs().max() <= tol * ref.abs().max(), (y.float() - ref).abs().max()


@pytest.mark.parametrize("engine", ["fbgemm", "onednn"])
@pytest.mark.parametrize("digits", [1, 2])
def test_a_token_of_all_zeros_gives_the_bias_and_leaves_its_batchmates_alone(engine, digits):
    """An all-zero activation row (a pad's, an unused embedding row's) once made the two-digit path's digits NaN
    (top / smallest-normal scale overflowed), and a batch of such rows made the kernel refuse the call
    (ProcessBench-gsm8k hit it); now each such row yields the bias exactly."""
    w, b = torch.randn(48, 80) / 80**0.5, torch.randn(48)
    q, scale = quantize_int8_rowwise(w)
    lin = FbgemmInt8Linear(q, scale, b, False, engine=engine, digits=digits)
    x = torch.randn(5, 80)
    x[2] = 0.0
    x[4] = 1e-35  # below the smallest scale kept: treated like zeros, finite
    with torch.inference_mode():
        y, alone = lin(x), lin(x[[0, 1, 3]])
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[2], b, rtol=0, atol=1e-6)
    torch.testing.assert_close(y[4], b, rtol=0, atol=1e-6)
    torch.testing.assert_close(y[[0, 1, 3]], alone, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        zeros = lin(torch.zeros(3, 80))
    torch.testing.assert_close(zeros, b.expand(3, -1), rtol=0, atol=1e-6)
