"""Scoring an evaluation's rows: the scorer's own results, resumable predictions, rows checked before work."""

import json
import random

import pytest

from edgeprm.eval.scoring import RESULT_FIELDS, read_predictions, score_rows, write_predictions

from ..helpers import items


class Counting:
    """A scorer that counts the rows it scores (everything else reads through)."""

    def __init__(self, scorer):
        self.scorer, self.scored = scorer, 0

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def score_prepared(self, prepared, progress=False):
        self.scored += len(prepared)
        return self.scorer.score_prepared(prepared, progress)


def same(got, want):
    """Equal up to fp32 rounding: batches of other shapes round apart by ~1e-7 (oneDNN/MKL GEMM blocking)."""
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(RESULT_FIELDS) and (g["truncated"], g["num_tokens"]) == (w["truncated"], w["num_tokens"])
        assert g["step_rewards"] + [g["score"]] == pytest.approx(w["step_rewards"] + [w["score"]], abs=1e-6)


def rows_of(seed, n):
    return [{"id": t.id, "problem": t.problem, "steps": list(t.steps)} for t in items(seed, n, problems=2)]


def test_results_are_the_scorers_and_a_killed_run_resumes(scorers, tmp_path):
    scorer = scorers["step-classifier"]
    rows = rows_of(random.randrange(2**32), 9)
    keys = [f"k{i}" for i in range(9)]
    want = [r.to_dict(with_id=False) for r in scorer.score_batch(rows)]
    preds = tmp_path / "p.jsonl"
    got = score_rows(scorer, rows, keys, "m", predictions=preds, progress=False, chunk_rows=4)
    same(got, want)
    lines = preds.read_text().splitlines()
    assert len(lines) == 9 and {json.loads(x)["key"] for x in lines} == set(keys)
    # A kill after two chunks, mid-way through a line: only the missing rows are scored again.
    preds.write_text("\n".join(lines[:5]) + "\n" + lines[5][:17])
    counting = Counting(scorer)
    counts = {}
    again = score_rows(counting, rows, keys, "m", predictions=preds, resume=True, progress=False, counts=counts)
    kept = [keys.index(json.loads(x)["key"]) for x in lines[:5]]  # written shortest first
    assert counts == {"kept": 5, "scored": 4} and counting.scored == 4
    assert [again[i] for i in kept] == [got[i] for i in kept]  # kept rows come back as written
    same(again, want)
    with pytest.raises(ValueError, match="p.jsonl already exists; pass --resume"):
        score_rows(scorer, rows, keys, "m", predictions=preds, progress=False)
    write_predictions(preds, keys, "m", got, lambda i: {"extra": i})
    final = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [r["key"] for r in final] == keys and [r["extra"] for r in final] == list(range(9))
    assert read_predictions(preds, "m", {k: len(r["steps"]) for k, r in zip(keys, rows)}).keys() == set(keys)


def test_a_predictions_file_of_another_run_is_refused(scorers, tmp_path):
    scorer = scorers["step-classifier"]
    rows = rows_of(3, 3)
    keys = ["a", "b", "c"]
    preds = tmp_path / "p.jsonl"
    score_rows(scorer, rows, keys, "m (quantization=int8)", predictions=preds, progress=False)
    with pytest.raises(ValueError, match=r"line 1: row 'a' was scored by 'm \(quantization=int8\)', not by this "
                                         r"run's 'm'; pass another --predictions path"):
        score_rows(scorer, rows, keys, "m", predictions=preds, resume=True, progress=False)
    other = [dict(r, steps=r["steps"] + ["one more"]) for r in rows]
    with pytest.raises(ValueError, match=r"row 'a' has \d+ step rewards but the data has \d+ steps"):
        score_rows(scorer, other, keys, "m (quantization=int8)", predictions=preds, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"row 'a' is not in this evaluation's data"):
        score_rows(scorer, rows[1:], keys[1:], "m (quantization=int8)", predictions=preds, resume=True,
                   progress=False)


def test_rows_are_checked_before_any_is_scored(checkpoints):
    import edgeprm

    scorer = Counting(edgeprm.load(checkpoints["step-classifier"], device="cpu", max_length=40))
    rows = [{"id": "short", "problem": "p", "steps": ["a"]},
            {"id": "long1", "problem": "p " * 50, "steps": ["a"]},
            {"id": "long2", "problem": "p", "steps": ["b " * 60]}]
    with pytest.raises(ValueError, match=r"2 of 3 rows are longer than the model's limit of 40 tokens \(first: "
                                         r"'long1' \(\d+ tokens\), 'long2' \(\d+ tokens\)\); pass --truncate"):
        score_rows(scorer, rows, ["short", "long1", "long2"], "m", progress=False)
    with pytest.raises(ValueError, match=r"row 'k1': step 0 is empty for id 'x'"):
        score_rows(scorer, [rows[0], {"id": "x", "problem": "p", "steps": [" "]}], ["k0", "k1"], "m", progress=False)
    assert scorer.scored == 0
