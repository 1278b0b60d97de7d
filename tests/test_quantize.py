"""8/4-bit scorers: primitives bit-exact against torch and bitsandbytes, modules against their references, loading,
quantized checkpoints, memory accounting, and fidelity against the golden fp32 scores (and GSM8K with a trained PRM).
"""

import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import edgeprm
from edgeprm.cli import main
from edgeprm.memory import COMPONENTS, measure_peak_rss, weight_bytes
from edgeprm.parity import BARS, FidelityBar, compare
from edgeprm.quantize import (
    MANIFEST,
    SCHEMES,
    CastEmbedding,
    FbgemmInt8Linear,
    Int8Embedding,
    QuantConfig,
    build_linear,
    dequantize_int8_rowwise,
    dequantize_nf4,
    int8_dot_saturates,
    quantize_backbone,
    quantize_int8_rowwise,
    quantize_nf4,
    quantize_weight,
)
from edgeprm.quantized_checkpoint import save_quantized
from edgeprm.scorer import QUANTIZATIONS

from .conftest import GSM8K
from .golden import build_golden_model, golden_parity, golden_rows, reference_rows, score_rows

try:
    import bitsandbytes as bnb
except ImportError:  # not a dependency: the default int8 path on CPU runs without it
    bnb = None
needs_bnb = pytest.mark.skipif(bnb is None, reason="bitsandbytes is not installed (pip install bitsandbytes); int4 "
                                                   "and the bnb-int8 kernel need it")

ROWS = [
    {"id": "a", "problem": "What is 12 * 3 + 4?", "steps": ["12 * 3 = 36.", "36 + 4 = 40.", "The answer is 40."]},
    {"id": "b", "problem": "Janet has 16 eggs and eats 3.", "solution": "She has 16 eggs.\n\nShe eats 3.\n\nSo 13."},
    {"id": "c", "problem": "Tom buys 5 bags of 12 apples.", "steps": ["5 * 12 = 60 apples."], "response": "60"},
]
# Fidelity on the golden set (a random-weight fixture). Its candidates score within ~0.002 of each other (median
# top-1 margin 0.0017, scores span 0.35-0.45), below any 8-bit noise, so Best-of-N top-1 agreement there measures
# noise: these bars check |delta| and rank correlation; the top-1 bars (parity.BARS) are held on GSM8K with a
# trained PRM below. The fbgemm bar leaves room for CPUs whose int8 dot product saturates (7-bit activations:
# measured 0.022 / 0.964 here, 0.015 / 0.990 with 8 bits).
GOLDEN_BARS = {"fbgemm": FidelityBar(max_step_delta=0.03, min_spearman=0.95),
               "bnb-int8": FidelityBar(max_step_delta=0.02, min_spearman=0.98),
               "bnb-nf4": FidelityBar(max_step_delta=0.06, min_spearman=0.98)}
# Every CPU path: (scheme, kernel).
PATHS = [pytest.param("int8", "fbgemm", id="int8-fbgemm"),
         pytest.param("int8", "bnb-int8", id="int8-bnb", marks=needs_bnb),
         pytest.param("int4", "bnb-nf4", id="int4-nf4", marks=needs_bnb)]
SCHEME_PARAMS = [pytest.param("int8", id="int8"), pytest.param("int4", id="int4", marks=needs_bnb)]


def mismatch_report(a: torch.Tensor, b: torch.Tensor) -> str:
    bad = (a != b).nonzero()
    return f"{len(bad)} of {a.numel()} differ; first at {bad[:5].tolist()}: {a[tuple(bad[0])]} vs {b[tuple(bad[0])]}"


# -- primitives ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(41, 401), (7, 1271), (64, 64), (1, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_rowwise_is_bit_exact_with_torch_quantize_per_channel(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    w = (torch.randn(shape, generator=g) * 0.3).to(dtype)
    w[0] = 0  # an all-zero row
    q, scale = quantize_int8_rowwise(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale[0] == 1 and not q[0].any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_channel(w.float(), scale.double(), torch.zeros(shape[0], dtype=torch.long), 0,
                                         torch.qint8).int_repr()
    assert torch.equal(q, ref), mismatch_report(q, ref)
    if bnb is not None:  # it rounds w * (127 / absmax): the same but within an ulp of a .5 tie (bf16 has some)
        cb, scb, _ = bnb.functional.int8_vectorwise_quant(w.float())
        diff = (q.int() - cb.int()).abs()
        assert diff.max() <= 1 and diff.sum() <= 1e-3 * q.numel(), mismatch_report(q, cb)
        torch.testing.assert_close(scale[1:] * 127, scb[1:], rtol=1e-6, atol=0)
    err = (dequantize_int8_rowwise(q, scale) - w.float()).abs()
    assert (err <= scale[:, None] / 2 + 1e-7).all()  # round to nearest: at most half a step


@needs_bnb
@pytest.mark.parametrize("shape", [(64, 128), (41, 401)])
def test_nf4_roundtrip_matches_bitsandbytes(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 0.1
    packed, state = quantize_nf4(w)
    assert packed.dtype == torch.uint8 and packed.numel() == (shape[0] * shape[1] + 1) // 2
    ref_packed, qs = bnb.functional.quantize_4bit(w.to(torch.bfloat16), blocksize=64, quant_type="nf4",
                                                  compress_statistics=False)
    assert torch.equal(packed, ref_packed)
    deq = dequantize_nf4(packed, state)
    assert torch.equal(deq, bnb.functional.dequantize_4bit(ref_packed, qs))
    absmax = w.reshape(-1)[: (w.numel() // 64) * 64].reshape(-1, 64).abs().amax(1)
    assert (deq.float() - w).abs().max() <= absmax.max() * 0.2  # NF4's widest gap is ~0.3 of the block absmax


# -- modules ------------------------------------------------------------------------------------------------------
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


def test_schemes_are_the_scorer_choices():
    assert QUANTIZATIONS == (None, *SCHEMES) == (None, "int8", "int4")
    assert {s.storage for s in SCHEMES.values()} == {"int8", "nf4"}
    with pytest.raises(ValueError, match=r"quantization must be one of \('int8', 'int4'\); got 'int3'"):
        QuantConfig("int3")
    with pytest.raises(ValueError, match=r"kernel 'bnb-nf4' does not run int8 weights; choose one of "
                                         r"\('fbgemm', 'bnb-int8'\)"):
        QuantConfig("int8", kernel="bnb-nf4")
    with pytest.raises(ValueError, match=r"the fbgemm kernel runs on \('cpu',\) only; got device 'cuda'"):
        QuantConfig("int8", kernel="fbgemm").kernel_for("cuda")
    assert QuantConfig("int8").kernel_for("cuda") == "bnb-int8" and QuantConfig("int8").kernel_for("cpu") == "fbgemm"
    with pytest.raises(ValueError, match="nf4_blocksize must be one of"):
        QuantConfig("int4", nf4_blocksize=48)
    with pytest.raises(ValueError, match="keep must be a tuple of module-name patterns"):
        QuantConfig("int8", keep="layers.0.*")
    with pytest.raises(ValueError, match="quantization must be one of"):
        edgeprm.load(None, quantization="fp8")


# -- loading ------------------------------------------------------------------------------------------------------
QUANT_MODULES = {"fbgemm": FbgemmInt8Linear}
if bnb is not None:
    QUANT_MODULES.update({"bnb-int8": bnb.nn.Linear8bitLt, "bnb-nf4": bnb.nn.Linear4bit})


def linears(scorer):
    return {n: type(m) for n, m in scorer.backbone.named_modules()
            if isinstance(m, (nn.Linear, *QUANT_MODULES.values()))}


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


def test_tied_token_prob_keeps_its_embedding_table(checkpoints, tmp_path):
    src, tied = checkpoints["token-prob"], tmp_path / "tied"
    tied.mkdir()
    for f in src.iterdir():
        (tied / f.name).write_bytes(f.read_bytes())
    tensors = load_file(src / "model.safetensors")
    del tensors["lm_head.weight"]  # the good/bad rows now come from the embedding table
    save_file(tensors, str(tied / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    with pytest.raises(ValueError, match="tied embedding table, which must stay full precision; quantize it with "
                                         "embeddings='keep'"):
        save_quantized(tied, tmp_path / "q", QuantConfig("int8", embeddings="int8"))


def test_quantize_backbone_in_place_matches_quantize_while_loading(checkpoints):
    ref = edgeprm.load(checkpoints["step-classifier"], quantization="int8", device="cpu")
    s = edgeprm.load(checkpoints["step-classifier"], device="cpu")
    quantize_backbone(s.backbone, "int8")
    assert all(t is FbgemmInt8Linear for t in linears(s).values())
    assert [r.step_rewards for r in s.score_batch(ROWS)] == [r.step_rewards for r in ref.score_batch(ROWS)]


def test_int8_batch_composition_moves_scores_within_quantization_error(checkpoints):
    """fbgemm quantizes activations per tensor per call: batchmates share a scale (documented in quantize.py)."""
    s = edgeprm.load(checkpoints["step-classifier"], quantization="int8", device="cpu")
    alone = [s.score_batch([r])[0] for r in ROWS]
    together = s.score_batch(ROWS)
    worst = max(abs(a - b) for x, y in zip(alone, together) for a, b in zip(x.step_rewards, y.step_rewards))
    assert worst < 0.02


# -- quantized checkpoints ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEME_PARAMS)
@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_quantized_checkpoint_loads_to_the_same_scores(checkpoints, tmp_path, family, scheme, capsys):
    src, out = checkpoints[family], tmp_path / f"{family}.{scheme}"
    assert main(["quantize", str(src), str(out), "--quantization", scheme]) == 0
    assert "14 Linear layers" in capsys.readouterr().err
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["quantization"] == scheme and manifest["family"] == family
    assert manifest["storage"] == SCHEMES[scheme].storage and len(manifest["modules"]) == 14
    assert manifest["versions"]["torch"] == torch.__version__
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        w = f.get_tensor("model.layers.0.mlp.up_proj.weight")
    assert w.dtype == (torch.int8 if scheme == "int8" else torch.uint8)
    assert ("lm_head.weight" in keys) == (family == "token-prob")  # only token-prob reads its LM head
    assert ("score.2.weight" in keys) == (family == "step-classifier")
    assert (out / "reward_head.pt").is_file() == (family == "value-head")
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    on_the_fly = edgeprm.load(src, quantization=scheme, device="cpu")
    stored = edgeprm.load(out, device="cpu")
    assert stored.quantization == scheme and stored.family.value == family
    a, b = on_the_fly.score_batch(ROWS), stored.score_batch(ROWS)
    assert [r.step_rewards for r in a] == [r.step_rewards for r in b] and [r.score for r in a] == [r.score for r in b]
    if scheme == "int8" and bnb is not None:  # one stored form serves both int8 kernels
        other = edgeprm.load(out, quantization=QuantConfig("int8", kernel="bnb-int8"), device="cpu")
        assert all(issubclass(t, bnb.nn.Linear8bitLt) for t in linears(other).values())


@needs_bnb
def test_quantized_checkpoint_errors(checkpoints, tmp_path):
    src, out = checkpoints["value-head"], tmp_path / "q"
    save_quantized(src, out, "int8")
    with pytest.raises(ValueError, match=r"holds int8 weights, but quantization='int4' was asked for; load it with "
                                         r"quantization=None \(or 'int8'\)"):
        edgeprm.load(out, quantization="int4", device="cpu")
    with pytest.raises(ValueError, match="already exists and is not empty; choose a new directory or pass --overwrite"):
        save_quantized(src, out, "int4")
    with pytest.raises(ValueError, match="is already a quantized checkpoint"):
        save_quantized(out, tmp_path / "again", "int4")
    assert main(["quantize", str(src), str(out), "--quantization", "int4", "--overwrite"]) == 0
    assert edgeprm.load(out, device="cpu").quantization == "int4"
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.raises(ValueError, match="has format_version 2; this edgeprm reads quantized checkpoints up to "
                                         "version 1. Upgrade edgeprm"):
        edgeprm.load(out, device="cpu")
    assert main(["quantize", str(src), str(out), "--quantization", "int8"]) == 2  # CLI: the error, exit code 2


# -- memory -------------------------------------------------------------------------------------------------------
def test_weight_bytes_per_component(checkpoints, scorers):
    cfg = json.loads((checkpoints["step-classifier"] / "config.json").read_text())
    h, inter, v, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    attn_params = layers * (h * h * 2 + h * kv * 2 + h + 2 * kv)  # q, o, k, v weights; q, k, v biases
    mlp_params = layers * 3 * h * inter
    fp32 = weight_bytes(scorers["step-classifier"])
    assert fp32["embeddings"] == 4 * v * h and fp32["attention"] == 4 * attn_params
    assert fp32["mlp"] == 4 * mlp_params and fp32["norms"] == 4 * h * (2 * layers + 1)
    assert fp32["head"] == 4 * (h * h + h + 2 * h + 2) and fp32["total"] == sum(fp32[c] for c in COMPONENTS)
    i8 = weight_bytes(edgeprm.load(checkpoints["step-classifier"], quantization="int8", device="cpu"))
    for c in ("embeddings", "norms", "head"):
        assert fp32[c] == i8[c]
    mlp_rows = layers * (2 * inter + h)  # output rows of gate, up, down
    assert i8["mlp"] == mlp_params + 12 * mlp_rows  # 1 byte per weight; scale, zero point, column offset per row
    if bnb is None:
        return
    i4 = weight_bytes(edgeprm.load(checkpoints["step-classifier"], quantization="int4", device="cpu"))
    assert all(fp32[c] == i4[c] for c in ("embeddings", "norms", "head"))
    blocks = layers * (2 * math.ceil(h * inter / 64) + math.ceil(inter * h / 64))
    assert i4["mlp"] == mlp_params // 2 + 4 * blocks + layers * 3 * 64  # half a byte, an fp32 absmax per 64, codebook


def test_measure_peak_rss_in_a_fresh_process(checkpoints):
    r = measure_peak_rss(checkpoints["value-head"], "int8", tokens=200, repeats=1, timeout=300, device="cpu")
    assert r["tokens"] >= 200 and r["tokens_per_s"] > 0 and r["quantization"] == "int8"
    assert 0 < r["import_rss"] <= r["load_rss"] <= r["peak_rss"] < 8 * 2**30
    assert r["weight_bytes"]["total"] > 0


# -- fidelity against the golden fp32 scores ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden_model(tmp_path_factory):
    return build_golden_model(tmp_path_factory.mktemp("golden") / "m")


def test_golden_fixture_rebuilds_byte_identical(golden_model, tmp_path):
    again = build_golden_model(tmp_path / "again")  # also checks the sha256s in meta.json
    for f in ("model.safetensors", "tokenizer.json"):
        assert (again / f).read_bytes() == (golden_model / f).read_bytes()


def test_fp32_scorer_matches_the_golden_scores(golden_model):
    rows = score_rows(edgeprm.load(golden_model, device="cpu", dtype="float32"), golden_rows())
    ref = reference_rows()
    assert [r["id"] for r in rows] == [r["id"] for r in ref]
    worst = max(abs(a - b) for x, y in zip(rows, ref) for a, b in zip(x["step_rewards"] + [x["score"]],
                                                                       y["step_rewards"] + [y["score"]]))
    assert worst <= 1e-5, worst
    r = compare(ref, rows)
    assert r.complete and r.top1_agreement == 1.0 and r.reference_bon_accuracy == r.bon_accuracy


@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_hold_the_golden_bars(golden_model, scheme, kernel):
    report = golden_parity(edgeprm.load(golden_model, quantization=QuantConfig(scheme, kernel), device="cpu"), kernel)
    assert report.complete and report.n_aligned == 200
    assert not GOLDEN_BARS[kernel].failures(report), GOLDEN_BARS[kernel].failures(report)


# -- fidelity on GSM8K Best-of-4 with a trained PRM ---------------------------------------------------------------
def trained_model() -> Path | None:
    env = os.environ.get("EDGEPRM_FIDELITY_MODEL")
    if env:
        return Path(env)
    demo = Path(edgeprm.__file__).parent / "assets" / "demo-prm"
    return demo if (demo / "config.json").is_file() else None


@pytest.fixture(scope="module")
def gsm8k_reference():
    model = trained_model()
    if model is None:
        pytest.skip("no trained PRM (edgeprm/assets/demo-prm or EDGEPRM_FIDELITY_MODEL): the Best-of-N bars need "
                    "one, since a random model's candidates tie within quantization noise")
    if not GSM8K.is_file():
        pytest.skip(f"{GSM8K} is absent (it lives in ../shared/data beside the repository)")
    from edgeprm.data import gsm8k_rows

    rows = [r for r in gsm8k_rows(GSM8K) if int(r["group"]) < 100]  # 100 problems x 4 solutions
    return model, rows, score_rows(edgeprm.load(model, device="cpu", dtype="float32", truncate=True), rows)


BARS_MISSED = pytest.mark.xfail(strict=True, reason=(
    "issue 6, blocked: on the 2M-parameter demo PRM, the only trained PRM here, bf16 rounding alone moves a step "
    "reward by up to 0.69 and changes 1.4% of Best-of-4 picks, so the int8 bars (max |delta| <= 0.02, top-1 >= 0.99) "
    "and int4 top-1 >= 0.95 are missed by every path (bench/QUANT.md has the figures); rankings and Best-of-N "
    "accuracy hold (see the test below). strict: a pass here must be recorded."))


@BARS_MISSED
@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_hold_the_bars_on_gsm8k(gsm8k_reference, scheme, kernel):
    model, rows, ref = gsm8k_reference
    scorer = edgeprm.load(model, quantization=QuantConfig(scheme, kernel), device="cpu", truncate=True)
    report = compare(ref, score_rows(scorer, rows), kernel)
    assert report.complete and report.n_groups == 100
    assert not BARS[scheme].failures(report), BARS[scheme].failures(report)
    assert not math.isnan(report.spearman)


@pytest.fixture(scope="module")
def heldout_reference():
    """The demo PRM's own held-out synthetic problems (a data seed never trained on), 100 problems x 4."""
    model = trained_model()
    if model is None:
        pytest.skip("no trained PRM (edgeprm/assets/demo-prm or EDGEPRM_FIDELITY_MODEL)")
    from edgeprm.demo_eval import HELDOUT_SEED
    from edgeprm.synthetic import generate

    rows = [{**r, "group": r["problem_id"]} for r in generate(100, seed=HELDOUT_SEED)]
    return model, rows, score_rows(edgeprm.load(model, device="cpu", dtype="float32"), rows)


@BARS_MISSED
@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_hold_the_bars_on_the_demo_heldout_set(heldout_reference, scheme, kernel):
    model, rows, ref = heldout_reference
    scorer = edgeprm.load(model, quantization=QuantConfig(scheme, kernel), device="cpu")
    report = compare(ref, score_rows(scorer, rows), kernel)
    assert report.complete and report.n_groups == 100
    assert not BARS[scheme].failures(report), BARS[scheme].failures(report)


@pytest.mark.parametrize("data", ["gsm8k", "heldout"])
@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_keep_the_ranking_and_best_of_n_accuracy(request, data, scheme, kernel):
    """What does hold on the demo PRM: rankings (Spearman >= 0.95 over all trajectories), Best-of-N accuracy within 4
    of 100 problems of fp32's, and a small mean step change (int8 <= 0.005, int4 <= 0.015). Its step maximum does not
    hold any bound worth asserting: bf16 rounding alone swings one borderline held-out step by 0.69. A broken path
    (wrong scales, a transposed weight) drops Spearman below 0.5 and Best-of-N accuracy to a random pick's."""
    model, rows, ref = request.getfixturevalue(f"{data}_reference")
    scorer = edgeprm.load(model, quantization=QuantConfig(scheme, kernel), device="cpu", truncate=True)
    report = compare(ref, score_rows(scorer, rows), kernel)
    assert report.complete and report.n_groups == 100
    assert report.spearman >= 0.95, report.spearman
    assert abs(report.bon_accuracy - report.reference_bon_accuracy) <= 0.04, report
    assert report.step_mean_abs <= (0.005 if scheme == "int8" else 0.015), report.step_mean_abs
