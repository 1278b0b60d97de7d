"""The torch-free ONNX Runtime backend: bundle errors, and a run where torch cannot be imported."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgeprm

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from edgeprm.backends.onnx import BUNDLE_FILE, load_onnx  # noqa: E402

from ..helpers import BLOCK_TORCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def broken_copy(src: Path, dst: Path, edit=None, remove=None) -> Path:
    shutil.copytree(src, dst)
    if remove:
        (dst / remove).unlink()
    if edit:
        meta = json.loads((dst / BUNDLE_FILE).read_text())
        edit(meta)
        (dst / BUNDLE_FILE).write_text(json.dumps(meta))
    return dst


def test_bad_bundles_say_what_is_wrong_and_what_to_do(checkpoints, bundle, tmp_path):
    good = bundle("step-classifier")
    with pytest.raises(FileNotFoundError, match=r"missing \['tokenizer.json'\].*copy the whole bundle"):
        load_onnx(broken_copy(good, tmp_path / "a", remove="tokenizer.json"))
    with pytest.raises(FileNotFoundError, match=r"missing \['prm.fp32.onnx'\]"):
        load_onnx(broken_copy(good, tmp_path / "b", remove="prm.fp32.onnx"))
    with pytest.raises(ValueError, match="format version 99, written by a newer edgeprm.*upgrade edgeprm"):
        load_onnx(broken_copy(good, tmp_path / "c", edit=lambda m: m.update(format_version=99)))
    with pytest.raises(ValueError, match="exported as a 'step-classifier' PRM, not 'value-head'.*--family"):
        edgeprm.load(good, backend="onnx", family="value-head")
    with pytest.raises(ValueError, match=r"holds 'none' weights.*not 'int8'.*--quantization int8"):
        edgeprm.load(good, backend="onnx", quantization="int8")
    with pytest.raises(ValueError, match=r"holds 'int4' weights"):
        edgeprm.load(bundle("step-classifier", "int4"), backend="onnx", quantization="int8")
    with pytest.raises(ValueError, match="quantization must be None or one of"):
        edgeprm.load(good, backend="onnx", quantization="nf4")
    with pytest.raises(FileNotFoundError, match="no edgeprm.json.*looks like a checkpoint.*edgeprm export"):
        edgeprm.load(checkpoints["step-classifier"], backend="onnx")
    with pytest.raises(FileNotFoundError, match="does not exist.*edgeprm export"):
        load_onnx(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="step_tag=' X' differs from the bundle's"):
        edgeprm.load(bundle("token-prob"), backend="onnx", step_tag=" X")
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        load_onnx(good, threads=0)
    with pytest.raises(ValueError, match="device must be one of"):
        load_onnx(good, device="tpu")
    # edgeprm.json is written last, so a half-written bundle never loads as complete.
    with pytest.raises(FileNotFoundError, match="no edgeprm.json"):
        load_onnx(broken_copy(good, tmp_path / "d", remove=BUNDLE_FILE))


# Runs in a fresh interpreter where importing torch or transformers raises ImportError.
TORCH_FREE = BLOCK_TORCH + r"""
import json
import edgeprm

scorer = edgeprm.load(sys.argv[1], backend="onnx")
best, results = scorer.best_of_n("What is 2 + 3?", [["2 + 3 = 5.", "The answer is 5."], "2 + 3 = 6."])
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "transformers"))
print(json.dumps({"best": best, "results": [r.to_dict() for r in results], "loaded": loaded}))
"""


@pytest.mark.parametrize("family", ["step-classifier", "token-prob"])
def test_onnx_backend_runs_where_torch_and_transformers_cannot_be_imported(bundle, family):
    path = bundle(family)
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE, str(path)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    best, want = edgeprm.load(path, backend="onnx").best_of_n(
        "What is 2 + 3?", [["2 + 3 = 5.", "The answer is 5."], "2 + 3 = 6."])
    assert out["best"] == best
    assert [r["step_rewards"] for r in out["results"]] == [r.step_rewards for r in want]


def test_bundle_manifest_reads_what_export_wrote(bundle):
    from edgeprm.backends.onnx import BundleManifest, read_bundle

    path = bundle("token-prob")
    b = read_bundle(path)
    raw = json.loads((path / BUNDLE_FILE).read_text())
    assert b.manifest.to_dict() == raw  # writes and reads itself, field for field
    assert b.family.value == "token-prob" and b.scheme == "none" and b.quantization is None
    assert b.options.step_tag == " ки" and b.max_length == raw["encoding"]["max_length"]
    with pytest.raises(ValueError, match=r"'family' must be one of"):
        BundleManifest(**{**{k: raw[k] for k in ("graph", "files", "quantization", "encoding",
                                                   "default_aggregation")}, "family": "verdict"})


def test_options_the_onnx_backend_lacks_are_named(bundle):
    with pytest.raises(ValueError, match=r"dtype='bfloat16' is an option of the torch backend, not of backend='onnx'"):
        edgeprm.load(bundle("value-head"), backend="onnx", dtype="bfloat16")
    with pytest.raises(ValueError, match=r"step_tag is an option of token-prob PRMs; this model is a value-head"):
        edgeprm.load(bundle("value-head"), backend="onnx", step_tag=" ки")
