"""`edgeprm quantize`: the summary it prints, the manifest it writes, its errors."""

import json

from edgeprm.cli import main
from edgeprm.quant.checkpoint import QUANT_MANIFEST


def test_quantize_writes_a_checkpoint_and_says_what_it_did(checkpoints, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", str(checkpoints["step-classifier"]), str(out), "--quantization", "int8",
                 "--keep", "layers.0.*"]) == 0
    err = capsys.readouterr().err
    assert "7 Linear layers -> int8 (int8)" in err and str(out) in err
    manifest = json.loads((out / QUANT_MANIFEST).read_text())
    assert manifest["keep"] == ["layers.0.*"] and not any(m.startswith("layers.0.") for m in manifest["modules"])
    assert main(["quantize", str(tmp_path / "nowhere"), str(tmp_path / "x"), "--quantization", "int8"]) == 2
    assert "does not exist" in capsys.readouterr().err
