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
    codes, absmax = gptq.gptq_round(w, torch.eye(128), state["quant_map"])
    assert torch.equal(gptq.pack(codes), packed)
    assert torch.allclose(absmax.reshape(-1), state["absmax"])


def test_shape_errors():
    with pytest.raises(ValueError, match="whole 64-weight blocks; got 96 columns"):
        gptq.gptq_round(torch.randn(4, 96), torch.eye(96), torch.linspace(-1, 1, 16))


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


def test_quantized_checkpoint_stores_the_calibrated_codes(tmp_path):
    import json

    from safetensors import safe_open

    from edgeprm.cli import main
    from edgeprm.quant.checkpoint import QUANT_MANIFEST

    # the run's own cache: the demo PRM's calibrations are the ones the fidelity tests use (the key holds the rows,
    # options and code; a calibration made from scratch is tested above)
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


# -- MatMulNBits' symmetric int4 (ONNX bundles) ---------------------------------------------------------------------
def _ort_round_to_nearest(w: torch.Tensor, block: int):
    """onnxruntime's own quantizer on a one-MatMul graph whose B is w^T: its (q, scales) initializers."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    out_f, in_f = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_f])],
        [numpy_helper.from_array(w.T.contiguous().numpy(), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    algo = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=0, bits=4)
    q = MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=True, accuracy_level=0, algo_config=algo)
    q.process()
    inits = {i.name: numpy_helper.to_array(i) for i in q.model.model.graph.initializer}
    return torch.from_numpy(inits["W_Q4"].copy()), torch.from_numpy(inits["W_scales"].copy())


def _int4_dequantize(stored: dict, shape) -> torch.Tensor:
    q, scales = stored["q"].long(), stored["scales"].reshape(shape[0], -1)
    codes = torch.stack([q & 15, q >> 4], -1).reshape(shape[0], scales.shape[1], -1)  # low nibble first
    return ((codes - 8).float() * scales[:, :, None]).reshape(shape)


def test_int4_with_uncorrelated_inputs_and_no_shrink_is_onnxruntimes_own_rounding(monkeypatch):
    """H = I: the codes and scales are exactly those onnxruntime's round-to-nearest quantizer writes."""
    monkeypatch.setattr(gptq, "SHRINK", (1.0,))
    g = torch.Generator().manual_seed(_seed())
    w = torch.randn(24, 128, generator=g)
    stored = gptq.matmul_nbits_stored(w, torch.eye(128), 32)
    q, scales = _ort_round_to_nearest(w, 32)
    assert torch.equal(stored["q"], q)
    assert torch.equal(stored["scales"], scales)


def test_int4_gptq_output_error_is_well_below_round_to_nearest():
    g = torch.Generator().manual_seed(_seed())
    w = torch.randn(40, 256, generator=g) * 0.05
    x = _activations(g, 600, 256)
    q, scales = _ort_round_to_nearest(w, 32)
    rtn = _int4_dequantize({"q": q, "scales": scales}, w.shape)
    ours = _int4_dequantize(gptq.matmul_nbits_stored(w, x.T @ x, 32), w.shape)
    err, base = (x @ (ours - w).T).pow(2).mean(), (x @ (rtn - w).T).pow(2).mean()
    assert err < 0.7 * base, (err, base)


def test_int4_bundle_carries_the_calibrated_codes(tmp_path):
    """`edgeprm export --quantization int4` from a checkpoint writes the calibration's GPTQ codes into every decoder
    MatMulNBits node, and the bundle scores close to the fp32 checkpoint."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from edgeprm.export.onnx import ExportConfig, export

    src = Path(edgeprm.__file__).parent / "assets" / "demo-prm"  # the run's cache: the fidelity tests' trace
    out = export(src, tmp_path / "b", ExportConfig("int4"))
    meta = __import__("json").loads((out / "edgeprm.json").read_text())
    assert meta["quantization"]["rounding"] == "gptq"
    s = cached_calibration(src, "int4", rounding="gptq", blocksize=32, grid="matmulnbits")
    assert meta["quantization"]["gptq_nodes"] == len(s.rounded) > 0
    model = onnx.load(str(out / meta["graph"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    in_bundle = sorted((inits[n.input[1]].tobytes(), inits[n.input[2]].tobytes())
                       for n in model.graph.node if n.op_type == "MatMulNBits")
    calibrated = sorted((r["q"].numpy().tobytes(), r["scales"].numpy().tobytes()) for r in s.rounded.values())
    assert in_bundle == calibrated  # every decoder Linear, with exactly the calibration's codes and scales
    ref = edgeprm.load(src, device="cpu").score_batch(ROWS)
    got = edgeprm.load(out, backend="onnx").score_batch(ROWS)
    diff = max(abs(a - b) for r, q in zip(ref, got) for a, b in zip(r.step_rewards, q.step_rewards))
    assert diff < 0.05, diff
