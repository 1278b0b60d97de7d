"""GPTQ rounding of NF4 weights (edgeprm.quant.gptq) against round-to-nearest, and the calibration that carries it."""

import os
from pathlib import Path

import pytest
import torch

import edgeprm
from edgeprm.quant import gptq
from edgeprm.quant.calibrate import INPUTS, builtin_rows, cached_calibration, calibrate
from edgeprm.quant.config import QuantConfig

from .shared import ROWS, needs_bnb

pytestmark = needs_bnb


def _seed() -> int:
    seed = int.from_bytes(os.urandom(4), "little")
    print("seed", seed)
    return seed


def _activations(g: torch.Generator, tokens: int, features: int) -> torch.Tensor:
    """Correlated activation rows with a few large channels, as a decoder's projection inputs have."""
    basis = torch.randn(features // 4, features, generator=g)
    x = torch.randn(tokens, features // 4, generator=g) @ basis + 0.3 * torch.randn(tokens, features, generator=g)
    x[:, torch.randperm(features, generator=g)[:3]] *= 8
    return x


def _rtn(w: torch.Tensor) -> torch.Tensor:
    from edgeprm.quant.primitives import dequantize_nf4, quantize_nf4

    return dequantize_nf4(*quantize_nf4(w)).float()


def test_gptq_output_error_is_well_below_round_to_nearest():
    g = torch.Generator().manual_seed(_seed())
    out_f, in_f = 48, 256
    w = torch.randn(out_f, in_f, generator=g) * 0.05
    x = _activations(g, 600, in_f)
    h = gptq.Hessian(in_f)
    for chunk in x.split(128):  # accumulated over several batches, as the calibration stream adds them
        h.add(chunk)
    assert h.rows == 600
    stored = gptq.nf4_stored(w, h.h)
    q = gptq.dequantize(gptq_unpack(stored[""], w.shape), stored[".absmax"].view(out_f, -1), stored[".quant_map"])
    err = (x @ (q - w).T).pow(2).mean()
    rtn = (x @ (_rtn(w) - w).T).pow(2).mean()
    assert err < 0.7 * rtn, (err, rtn)


def gptq_unpack(packed: torch.Tensor, shape) -> torch.Tensor:
    flat = packed.reshape(-1)
    return torch.stack([flat >> 4, flat & 15], -1).reshape(shape)


def test_stored_form_is_what_bitsandbytes_dequantizes():
    from edgeprm.quant.primitives import dequantize_nf4

    g = torch.Generator().manual_seed(_seed())
    w = torch.randn(32, 192, generator=g)
    x = _activations(g, 300, 192)
    stored = gptq.nf4_stored(w, x.T @ x)
    state = {k[1:]: v for k, v in stored.items() if k}
    ours = gptq.dequantize(gptq_unpack(stored[""], w.shape), stored[".absmax"].view(32, -1), stored[".quant_map"])
    theirs = dequantize_nf4(stored[""], state).float()
    assert torch.equal(theirs, ours.to(torch.bfloat16).float())  # bf16: the dtype the quant state records


def test_with_uncorrelated_inputs_and_no_shrink_it_is_round_to_nearest(monkeypatch):
    """H = I leaves nothing to compensate: the codes are bitsandbytes' own round-to-nearest codes."""
    from edgeprm.quant.primitives import quantize_nf4

    monkeypatch.setattr(gptq, "SHRINK", (1.0,))
    g = torch.Generator().manual_seed(_seed())
    w = (torch.randn(16, 128, generator=g)).to(torch.bfloat16).float()  # bf16 values: bitsandbytes rounds from bf16
    packed, state = quantize_nf4(w)
    codes, absmax = gptq.gptq_nf4(w, torch.eye(128), state["quant_map"])
    assert torch.equal(gptq.pack(codes), packed)
    assert torch.allclose(absmax.reshape(-1), state["absmax"])


def test_shape_errors():
    with pytest.raises(ValueError, match="whole 64-weight blocks; got 96 columns"):
        gptq.gptq_nf4(torch.randn(4, 96), torch.eye(96), torch.linspace(-1, 1, 16))


def test_calibration_rounds_every_decoder_linear_and_loading_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRM_CACHE", str(tmp_path))
    src = Path(edgeprm.__file__).parent / "assets" / "demo-prm"  # hidden 192: whole NF4 blocks per row
    s = calibrate(src, builtin_rows(4), "int4", progress=False)
    n_layers = len({k.split(".")[1] for k in s.factors})
    assert set(s.rounded) == {f"layers.{i}.{c}" for i in range(n_layers) for _, cs, _ in INPUTS for c in cs}
    assert s.to_record()["rounding"] == "gptq"
    assert not calibrate(src, builtin_rows(4), "int8", progress=False).rounded  # int8 rounds at load time
    # the scorer's NF4 codes are the calibrated ones (16 built-in rows), not round-to-nearest ones
    scorer = edgeprm.load(src, quantization=QuantConfig("int4", kernel="nf4-dense"), device="cpu")
    plain = edgeprm.load(src, quantization=QuantConfig("int4", kernel="nf4-dense", rounding="nearest"),
                         device="cpu")
    cached = cached_calibration(src, "int4", rounding="gptq")
    q = scorer.backbone.get_submodule("layers.0.mlp.up_proj")
    assert torch.equal(q.packed, cached.rounded["layers.0.mlp.up_proj"][""].reshape(-1))
    assert not torch.equal(q.packed, plain.backbone.get_submodule("layers.0.mlp.up_proj").packed)
    again = edgeprm.load(src, quantization=QuantConfig("int4", kernel="nf4-dense"), device="cpu")  # from the cache
    assert [r.step_rewards for r in again.score_batch(ROWS)] == [r.step_rewards for r in scorer.score_batch(ROWS)]


def test_layers_without_whole_blocks_per_row_round_to_nearest(checkpoints):
    """The tiny fixtures' rows (40 weights) do not split into 64-weight blocks: their NF4 blocks run across rows,
    which column-by-column rounding cannot follow, so calibration leaves them to round-to-nearest."""
    s = calibrate(checkpoints["value-head"], builtin_rows(2), "int4", progress=False)
    assert s.factors and not s.rounded


def test_rounding_is_validated():
    with pytest.raises(ValueError, match="rounding must be one of"):
        QuantConfig("int4", rounding="awq")


def test_quantized_checkpoint_stores_the_calibrated_codes(tmp_path, monkeypatch):
    import json

    from safetensors import safe_open

    from edgeprm.cli import main
    from edgeprm.quant.checkpoint import QUANT_MANIFEST

    monkeypatch.setenv("EDGEPRM_CACHE", str(tmp_path / "cache"))
    src = Path(edgeprm.__file__).parent / "assets" / "demo-prm"
    outs = {}
    for rounding in ("gptq", "nearest"):
        outs[rounding] = out = tmp_path / rounding
        assert main(["quantize", str(src), str(out), "--quantization", "int4", "--rounding", rounding]) == 0
        assert json.loads((out / QUANT_MANIFEST).read_text())["calibration"]["rounding"] == rounding
    key = "model.layers.2.self_attn.o_proj.weight"
    with safe_open(str(outs["gptq"] / "model.safetensors"), "pt") as f, \
            safe_open(str(outs["nearest"] / "model.safetensors"), "pt") as g:
        assert not torch.equal(f.get_tensor(key), g.get_tensor(key))
    calibrated = cached_calibration(src, "int4", rounding="gptq")
    with safe_open(str(outs["gptq"] / "model.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor(key), calibrated.rounded["layers.2.self_attn.o_proj"][""])
    stored = edgeprm.load(outs["gptq"], device="cpu", quantization=QuantConfig("int4", kernel="nf4-dense"))
    on_the_fly = edgeprm.load(src, device="cpu", quantization=QuantConfig("int4", kernel="nf4-dense"))
    assert [r.step_rewards for r in stored.score_batch(ROWS)] == [r.step_rewards for r in on_the_fly.score_batch(ROWS)]
