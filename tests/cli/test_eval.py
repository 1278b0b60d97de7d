"""`edgeprm eval processbench|bon`: tables, JSON, per-row predictions and resume, --compare and --max-drop."""

import json
import random

import pytest

import edgeprm
from edgeprm.cli import main
from edgeprm.eval.processbench import first_error
from edgeprm.rows import write_jsonl

from ..helpers import items
from .test_main import imported


def write_processbench(root, labels_of=None, seed=0, n=8):
    """gsm8k.json and math.json of `n` rows each; labels from `labels_of(split, i, n_steps)` or random."""
    rng = random.Random(seed)
    root.mkdir(exist_ok=True)
    for k, split in enumerate(("gsm8k", "math")):
        records = []
        for i, t in enumerate(items(seed + k, n, problems=4)):
            label = labels_of(split, i, len(t.steps)) if labels_of else rng.choice([-1, *range(len(t.steps))])
            records.append({"id": f"{split}-{i}", "generator": "g", "problem": t.problem, "steps": list(t.steps),
                            "final_answer_correct": label == -1, "label": label})
        (root / f"{split}.json").write_text(json.dumps(records))
    return root


def eval_cli(*args):
    return main(["eval", *map(str, args), "-q"])


def test_processbench_table_json_and_predictions(tmp_path, checkpoints, capsys):
    data = write_processbench(tmp_path / "pb", seed=random.randrange(2**16))
    model = checkpoints["step-classifier"]
    assert eval_cli("processbench", "--data", data, "--model", model) == 0
    out = capsys.readouterr().out
    assert "ProcessBench" in out and "gsm8k" in out and "average" in out and "threshold sweep" in out
    preds = tmp_path / "p.jsonl"
    assert eval_cli("processbench", "--data", data, "--model", model, "--json", "--predictions", preds,
                    "--threshold", "0.55") == 0
    doc = json.loads(capsys.readouterr().out)
    report = doc["report"]
    assert [s["split"] for s in report["splits"]] == ["gsm8k", "math"] and report["threshold"] == 0.55
    assert [s["split"] for s in report["sweep"]] == ["gsm8k", "math", "average"]
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [r["key"] for r in rows] == [f"{s}/{s}-{i}" for s in ("gsm8k", "math") for i in range(8)]
    assert all(r["prediction"] == first_error(r["step_rewards"], 0.55) for r in rows)
    records = {f"{s}/{r['id']}": r for s in ("gsm8k", "math") for r in json.loads((data / f"{s}.json").read_text())}
    assert all(r["label"] == records[r["key"]]["label"] for r in rows)
    # The figures are the metric of the written predictions.
    gsm = [r for r in rows if r["split"] == "gsm8k"]
    wrong = [r for r in gsm if r["label"] != -1]
    expect = 100 * sum(r["prediction"] == r["label"] for r in wrong) / len(wrong)
    assert report["splits"][0]["error_accuracy"] == pytest.approx(expect)
    assert eval_cli("processbench", "--data", data, "--model", model, "--predictions", preds) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert eval_cli("processbench", "--data", data, "--model", model, "--json", "--predictions", preds,
                    "--threshold", "0.55", "--resume") == 0
    assert json.loads(capsys.readouterr().out)["report"] == report


def test_bon_table_and_json(tmp_path, checkpoints, capsys):
    rows = []
    for t in items(random.randrange(2**16), 12, problems=3):
        rows.append({"id": t.id, "problem": t.problem, "steps": list(t.steps), "is_correct": int(t.id) // 3 % 2 == 0,
                     "answer": str(int(t.id) % 2)})
    src = tmp_path / "c.jsonl"
    write_jsonl(rows, src)
    assert eval_cli("bon", src, "--model", checkpoints["step-classifier"]) == 0
    out = capsys.readouterr().out
    assert "Best-of-4" in out and "min (the scorer's)" in out and "majority vote" in out and "oracle 100.0" in out
    assert eval_cli("bon", src, "--model", checkpoints["step-classifier"], "--json", "--aggregation", "mean") == 0
    report = json.loads(capsys.readouterr().out)["report"]
    assert report["aggregation"] == "mean" and report["n_groups"] == 3 and report["random_pick"] == pytest.approx(
        50.0)


def test_compare_with_an_int8_variant(tmp_path, checkpoints, capsys):
    data = write_processbench(tmp_path / "pb", seed=random.randrange(2**16))
    preds = tmp_path / "p.jsonl"
    model = checkpoints["step-classifier"]
    assert eval_cli("processbench", "--data", data, "--model", model, "--compare", "int8", "--max-drop", "100",
                    "--predictions", preds) == 0
    out = capsys.readouterr().out
    assert "fidelity gate (processbench)" in out and "int8: " in out and "quantization=int8" in out
    assert "first-error agreement (%)" in out and "Spearman (scores)" in out and "gsm8k F1 *" in out
    int8 = [json.loads(x) for x in (tmp_path / "p.int8.jsonl").read_text().splitlines()]
    assert len(int8) == 16 and all("quantization=int8" in r["scorer"] for r in int8)
    assert eval_cli("processbench", "--data", data, "--model", model, "--compare", "int8", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    (v,) = doc["variants"]
    assert v["label"] == "int8" and v["parity"]["n_aligned"] == 16 and doc["failures"] == []
    assert v["parity"]["step_max_abs"] < 0.1 and v["agreement"][0][0] == "first-error agreement"


def test_max_drop_fails_a_variant_that_loses_points(tmp_path, checkpoints, capsys):
    """Labels are the reference's own predictions, so it scores F1 100; another model loses points and fails."""
    model = checkpoints["step-classifier"]
    probe = write_processbench(tmp_path / "probe", labels_of=lambda s, i, n: -1)
    scorer = edgeprm.load(model, device="cpu")
    rewards = {}
    for split in ("gsm8k", "math"):
        for r in json.loads((probe / f"{split}.json").read_text()):
            rewards[split, int(r["id"].split("-")[1])] = scorer.score(r["problem"], r["steps"]).step_rewards
    # half the rows flagged; the threshold sits between two rows' rewards, so float noise of 1e-7 between
    # batch shapes (a shared prompt computed once, say) cannot move a row across it
    mins = sorted(min(r) for r in rewards.values())
    threshold = float((mins[len(mins) // 2 - 1] + mins[len(mins) // 2]) / 2)
    data = write_processbench(tmp_path / "pb", labels_of=lambda s, i, n: first_error(rewards[s, i], threshold))
    args = ["processbench", "--data", data, "--model", model, "--threshold", threshold, "--compare",
            checkpoints["value-head"]]
    assert eval_cli(*args, "--json") == 0  # no limit: a report, no verdict
    doc = json.loads(capsys.readouterr().out)
    assert doc["reference"]["report"]["average_f1"] == 100.0
    assert doc["variants"][0]["report"]["average_f1"] < 99
    assert eval_cli(*args, "--max-drop", "1") == 1
    captured = capsys.readouterr()
    assert "FAIL value-head: gsm8k F1" in captured.out and "fidelity gate failed: value-head:" in captured.err


def test_an_onnx_bundle_variant_agrees_with_its_source(tmp_path, checkpoints, bundle, capsys):
    data = write_processbench(tmp_path / "pb", seed=random.randrange(2**16), n=4)
    assert eval_cli("processbench", "--data", data, "--model", checkpoints["step-classifier"], "--compare",
                    bundle("step-classifier"), "--json", "--max-drop", "0") == 0
    (v,) = json.loads(capsys.readouterr().out)["variants"]
    assert "backend=onnx" in v["scorer"] and v["parity"]["step_max_abs"] < 1e-4
    assert v["agreement"][0][1] == 100.0


def test_user_errors_exit_2(tmp_path, capsys):
    data = write_processbench(tmp_path / "pb")
    cases = [(["--max-drop", "1"], "--max-drop needs --compare"),
             (["--resume"], "--resume continues a --predictions file"),
             (["--threshold", "1.5"], "threshold must be in [0, 1]"),
             (["--compare", "int9"], "'int9' is not a quantization"),
             (["--split", "math", "--data", data / "gsm8k.json"], "holds split 'gsm8k', not 'math'")]
    for extra, message in cases:
        args = ["processbench", *(["--data", data] if "--data" not in extra else []), *extra]
        assert eval_cli(*args) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("edgeprm: error: ") and message in err[-1], (extra, err)


def test_eval_parses_without_torch():
    assert [m for m in imported("eval", "processbench", "--help") if not m.startswith("edgeprm.")] == []
    assert [m for m in imported("eval", "bon", "--help") if not m.startswith("edgeprm.")] == []
