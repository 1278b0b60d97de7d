"""Best-of-N: hand-made groups with known figures, answer extraction, the reader, aggregations from one pass."""

import json
import random

import pytest

from edgeprm.aggregation import AGGREGATIONS
from edgeprm.eval.bon import bon_report, extract_answer, read_bon_rows, row_answer, trajectory_scores, vote_accuracy

from ..conftest import GSM8K


def cand(group, correct, answer, steps):
    return ({"id": f"{group}/{len(steps)}-{answer}-{correct}", "group": group, "problem": f"problem {group}",
             "steps": [f"s{i}" for i in range(len(steps))], "is_correct": correct, "answer": answer},
            {"step_rewards": steps, "trajectory_reward": steps[-1], "score": min(steps)})


def test_hand_made_groups():
    pairs = [cand("a", True, "4", [0.9, 0.8]), cand("a", False, "5", [0.95, 0.1]), cand("a", False, "5", [0.6, 0.7]),
             cand("b", False, "7", [0.9, 0.9]), cand("b", True, "8", [0.5, 0.4]), cand("b", False, "9", [0.2, 0.3])]
    rows, results = [p[0] for p in pairs], [p[1] for p in pairs]
    r = bon_report(rows, results, "m", aggregation="min")
    by = {a.aggregation: a for a in r.by_aggregation}
    assert list(by) == list(AGGREGATIONS) and (r.n_rows, r.n_groups, r.group_sizes) == (6, 2, (3, 3))
    assert by["min"].best_of_n == 50.0  # a: 0.8 wins (correct); b: 0.9 wins (wrong)
    assert by["last"].best_of_n == 50.0  # a: 0.8 (correct); b: 0.9 (wrong)
    assert by["mean"].best_of_n == 50.0  # a: 0.85 (correct); b: 0.9 (wrong)
    assert by["prod"].best_of_n == 50.0
    # weighted vote (min): a: '4' 0.8 vs '5' 0.1 + 0.6 = 0.7 -> '4' (correct); b: '7' 0.9 wins (wrong).
    assert by["min"].weighted_vote == 50.0
    # majority: a: '5' twice (wrong); b: a three-way tie, one of three correct -> 1/3.
    assert r.majority_vote == pytest.approx(100 / 6)
    assert r.random_pick == pytest.approx(100 / 3) and r.oracle == 100.0 and r.answers_found == 6
    assert [f for f in r.figures() if f[2]] == [("Best-of-N, min", 50.0, True)]


def test_vote_ties_are_expected_values_and_missing_answers_vote_alone():
    assert vote_accuracy(["1", "2"], [True, False], [1.0, 1.0]) == 0.5
    assert vote_accuracy([None, None, "3"], [True, True, False], [1.0, 1.0, 1.5]) == 0.0
    assert vote_accuracy([None, None, "3"], [True, True, False], [1.0, 1.0, 0.5]) == 1.0  # two ties, both correct
    assert vote_accuracy(["1", "1"], [True, False], [1.0, float("nan")]) == 0.5  # an answer's share of correct


def test_answer_extraction():
    assert extract_answer("so \\boxed{\\frac{1}{2}} and then") == "\\frac{1}{2}"
    assert extract_answer("first \\boxed{3}, finally \\boxed{ 1,200 }") == "1200"
    assert extract_answer("She makes 9 * 2 = $18\nA: 18") == "18"
    assert extract_answer("#### 72.0") == "72" and extract_answer("The answer is $1,234.") == "1234"
    assert extract_answer("Therefore, the final answer is 78.") == "78"
    assert extract_answer("no answer here") is None
    assert row_answer({"answer": 18.0, "steps": ["A: 3"]}) == "18"
    assert row_answer({"steps": ["x", "A: 3"]}) == "3" and row_answer({"solution": "x\n\nA: 5"}) == "5"
    assert row_answer({"steps": ["A: 3"], "response": "The answer is 4."}) == "4"


def test_aggregations_recomputed_from_one_pass_equal_the_scorers_own(checkpoints):
    """One scoring pass serves every aggregation: what bon.py recomputes is what a scorer of that aggregation
    returns (fresh random trajectories, the tiny step-classifier and value-head models)."""
    import edgeprm

    from ..helpers import items

    seed = random.randrange(2**32)
    trajs = items(seed, 12, problems=3)
    for family in ("step-classifier", "value-head"):
        base = edgeprm.load(checkpoints[family], device="cpu", aggregation="min")
        results = [r.to_dict() for r in base.score_batch(trajs)]
        for agg in AGGREGATIONS:
            own = [r.score for r in edgeprm.load(checkpoints[family], device="cpu", aggregation=agg,
                                                 alpha=1.5).score_batch(trajs)]
            assert trajectory_scores(results, agg, 1.5) == pytest.approx(own, abs=1e-6), (family, agg, seed)


def test_reader(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"problem": "p", "steps": ["a"], "is_correct": 1}) + "\n"
                 + json.dumps({"id": "q7", "problem": "p", "steps": ["a"]}) + "\n")
    with pytest.raises(ValueError, match=r"c.jsonl line 2: row 'q7' has is_correct=None; Best-of-N accuracy needs"):
        read_bon_rows(p)
    p.write_text("")
    with pytest.raises(ValueError, match="holds no rows"):
        read_bon_rows(p)


@pytest.mark.skipif(not GSM8K.is_file(), reason=f"real data not present at {GSM8K}")
def test_the_gsm8k_file_reads_as_best_of_4_groups_with_answers():
    rows = read_bon_rows(GSM8K)
    assert len(rows) == 4 * 1319 and rows[0]["group"] == "0"
    answers = [row_answer(r) for r in rows]
    assert sum(a is not None for a in answers) >= 5265  # all but 11 solutions end in 'A: x'
    results = [{"step_rewards": [0.5] * len(r["steps"]), "trajectory_reward": 0.5, "score": 0.5} for r in rows]
    rep = bon_report(rows, results, "constant", "min")
    # With every score tied the first candidate is picked: the 6b_finetuning solution's accuracy.
    first = [r["is_correct"] for r in rows[::4]]
    assert rep.by_aggregation[0].best_of_n == pytest.approx(100 * sum(first) / len(first))
    assert 35 < rep.random_pick < 41 and 60 < rep.oracle < 72  # 38% of solutions, 67% of problems (the README)
    assert rep.random_pick < rep.majority_vote < rep.oracle
