"""Quantized checkpoints: written by edgeprm quantize, loaded back to the same scores, their errors."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import edgeprm
from edgeprm.cli import main
from edgeprm.quant.checkpoint import QUANT_MANIFEST as MANIFEST
from edgeprm.quant.checkpoint import save_quantized
from edgeprm.quant.config import QUANT_SCHEMES as SCHEMES
from edgeprm.quant.config import QuantConfig

from .shared import ROWS, SCHEME_PARAMS, bnb, linears, needs_bnb


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


def test_manifest_writes_and_reads_itself_and_old_checkpoints_still_load(checkpoints, tmp_path):
    from edgeprm.quant.checkpoint import LEGACY_MANIFEST, QuantManifest, read_manifest

    out = save_quantized(checkpoints["token-prob"], tmp_path / "q", "int8")
    m = read_manifest(out)
    assert m == QuantManifest.from_dict(json.loads((out / MANIFEST).read_text()))
    assert m.family == "token-prob" and m.storage == "int8" and len(m.modules) == 14
    want = [r.step_rewards for r in edgeprm.load(out, device="cpu").score_batch(ROWS)]
    # A checkpoint written before the manifest had its own name (edgeprm.json) loads the same.
    (out / MANIFEST).rename(out / LEGACY_MANIFEST)
    assert read_manifest(out) == m
    assert [r.step_rewards for r in edgeprm.load(out, device="cpu").score_batch(ROWS)] == want
    with pytest.raises(ValueError, match=r"quantization 'int3' with storage 'int8' is not one of this build's"):
        QuantManifest.from_dict({**m.to_dict(), "quantization": "int3"}, "here")
    # An ONNX bundle's edgeprm.json is another artifact: never taken for a quantized checkpoint.
    other = tmp_path / "other"
    other.mkdir()
    (other / LEGACY_MANIFEST).write_text(json.dumps({"format": "edgeprm-onnx", "format_version": 1}))
    assert read_manifest(other) is None
