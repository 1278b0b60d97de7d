"""`edgeprm export`: bundles written from a checkpoint or an fp32 bundle, then scored with `edgeprm score`."""

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from edgeprm.backends.onnx import BUNDLE_FILE, load_onnx  # noqa: E402
from edgeprm.cli import main as cli_main  # noqa: E402
from edgeprm.export.onnx import ExportConfig, export  # noqa: E402

from ..helpers import close, items  # noqa: E402


def test_cli_export_then_score_with_the_onnx_backend(checkpoints, bundle, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert cli_main(["export", str(checkpoints["value-head"]), str(out), "--quantization", "int4",
                     "--block-size", "16", "--accuracy-level", "1", "--no-smooth", "--rounding", "nearest"]) == 0
    meta = json.loads((out / BUNDLE_FILE).read_text())
    assert meta["graph"] == "prm.int4.b16.onnx"
    assert meta["quantization"]["block_size"] == 16 and meta["quantization"]["accuracy_level"] == 1
    assert meta["quantization"]["smoothing"] is None
    # Without smoothing and GPTQ (both need the checkpoint), quantizing the fp32 bundle gives the same graph as
    # exporting the checkpoint straight to int4.
    again = export(bundle("value-head"), tmp_path / "again", ExportConfig("int4", 16, 1))
    trajs = items(3, 4)
    close(load_onnx(again).score_batch(trajs), load_onnx(out).score_batch(trajs), 0.0)
    with pytest.raises(ValueError, match="'int4' bundle; quantize from an fp32 bundle or from the checkpoint"):
        export(again, tmp_path / "twice", ExportConfig("int8"))
    # Re-exporting into the same directory replaces the bundle and leaves no stale graph behind.
    assert cli_main(["export", str(checkpoints["value-head"]), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["edgeprm.json", "prm.fp32.onnx", "tokenizer.json",
                                                            "tokenizer_config.json"])
    rows = [{"id": "a", "problem": "What is 2 + 3?", "solution": "2 + 3 = 5.\n\nThe answer is 5."},
            {"id": "b", "problem": "What is 4 * 3?", "steps": ["4 * 3 = 12."]}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for backend, model in (("onnx", out), ("torch", checkpoints["value-head"])):
        assert cli_main(["score", str(src), "-o", str(tmp_path / f"{backend}.jsonl"), "--model", str(model),
                         "--backend", backend, "-q"]) == 0
    got, want = ([json.loads(x) for x in (tmp_path / f"{b}.jsonl").read_text().splitlines()] for b in ("onnx", "torch"))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["step_rewards"] + [g["score"]], w["step_rewards"] + [w["score"]], atol=1e-4)
