"""`edgeprm parity`: the table, JSON, and bad input files."""

import json

import pytest

from edgeprm.cli import main
from edgeprm.eval.parity import read_scores

from ..eval.shared import rows, write_scores


def test_cli_table_and_json(tmp_path, capsys):
    ref = write_scores(tmp_path / "ref.jsonl", rows([0.9, 0.2, 0.5, 0.4], correct=[1, 0, 0, 0]))
    c1 = write_scores(tmp_path / "int8.jsonl", rows([0.89, 0.21, 0.5, 0.4], correct=[1, 0, 0, 0]))
    c2 = write_scores(tmp_path / "int4.jsonl", rows([0.9, 0.2, 0.5, 0.4])[:3])
    assert main(["parity", str(ref), str(c1), str(c2)]) == 0
    out, err = capsys.readouterr()
    assert "int8.jsonl" in out and "int4.jsonl" in out and "Best-of-N top-1 agreement" in out
    assert "step max |delta|" in out and "0.0100" in out and "picks changed (max ref. margin)" in out
    assert "int4.jsonl: missing ids 'r3'" in out and "some rows did not align" in err
    assert main(["parity", str(ref), str(c1), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (c,) = doc["candidates"]
    assert c["n_aligned"] == 4 and c["top1_agreement"] == 1 and c["step_max_abs"] == pytest.approx(0.01)


def test_cli_errors(tmp_path, capsys):
    ref = write_scores(tmp_path / "ref.jsonl", rows([0.9, 0.2]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "r0", "score": 1, "step_rewards": [1]}\n{oops\n')
    assert main(["parity", str(ref), str(bad)]) == 2
    assert "bad.jsonl line 2: not valid JSON" in capsys.readouterr().err
    unscored = write_scores(tmp_path / "in.jsonl", [{"id": "r0", "problem": "p", "steps": ["s"]}])
    with pytest.raises(ValueError, match="line 1: a score row needs 'score' and 'step_rewards'"):
        read_scores(unscored)
