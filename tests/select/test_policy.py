"""Selection rules against brute force on fresh random scores: top-k per group, top-fraction, threshold, scores."""

import math
import random

import numpy as np
import pytest

from edgeprm.aggregation import aggregate
from edgeprm.select.policy import Cutoff, SelectRule, Threshold, TopFraction, TopK, rank_key, score_of
from edgeprm.stats import best_index


def random_rows(rng: random.Random, n: int, groups: int, contiguous: bool):
    """Rows with scores drawn from a few values (many ties), some NaN and None, grouped by 'problem'."""
    values = [rng.choice([0.1, 0.5, 0.5, 0.9, rng.random(), math.nan, None]) for _ in range(n)]
    labels = sorted(rng.randrange(groups) for _ in range(n)) if contiguous else [rng.randrange(groups)
                                                                                 for _ in range(n)]
    return [{"id": i, "problem": f"p{g}", "score": v} for i, (g, v) in enumerate(zip(labels, values))]


def run(selector, rows):
    kept = []
    for i, r in enumerate(rows):
        kept += selector.offer(i, r, score_of(r))
    return [i for i, _ in kept + selector.finish()]


@pytest.mark.parametrize("contiguous", [False, True])
def test_top_1_is_best_index_of_every_group(contiguous):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    rows = random_rows(rng, 401, 41, contiguous)
    got = run(TopK(1, contiguous=contiguous), rows)
    want = []
    for g in sorted({r["problem"] for r in rows}, key=lambda p: min(r["id"] for r in rows if r["problem"] == p)):
        members = [r for r in rows if r["problem"] == g]
        want.append(members[best_index([r["score"] for r in members])]["id"])
    assert got == sorted(want), f"seed {seed}"


@pytest.mark.parametrize("k", [2, 3, 7])
def test_top_k_matches_sorting_each_group_and_keeps_input_order(k):
    seed = random.randrange(2**32)
    rows = random_rows(random.Random(seed), 311, 23, contiguous=False)
    sel = TopK(k)
    got = run(sel, rows)
    want = []
    for g in {r["problem"] for r in rows}:
        members = [r for r in rows if r["problem"] == g]
        ranked = sorted(members, key=lambda r: rank_key(score_of(r), r["id"]), reverse=True)
        want += [r["id"] for r in ranked[:k]]
    assert got == sorted(want), f"seed {seed}"
    assert sel.held == 0 and sel.groups == len({r["problem"] for r in rows})


def test_contiguous_top_k_holds_one_group_and_rejects_a_group_that_comes_back():
    rows = random_rows(random.Random(1), 200, 20, contiguous=True)
    sel, most = TopK(2, contiguous=True), 0
    for i, r in enumerate(rows):
        sel.offer(i, r, score_of(r))
        most = max(most, sel.held)
    assert most <= 2
    sel = TopK(1, contiguous=True)
    sel.offer(0, {"problem": "a", "score": 1.0}, 1.0)
    sel.offer(1, {"problem": "b", "score": 1.0}, 1.0)
    with pytest.raises(ValueError, match=r"line 3 \(id 'x'\): group 'problem=a' appears again after other groups"):
        sel.offer(2, {"id": "x", "problem": "a", "score": 1.0}, 1.0, where="line 3")


@pytest.mark.parametrize("fraction", [0.0, 0.29, 0.5, 1.0, None])
def test_top_fraction_keeps_exactly_floor_f_n_best_rows(fraction):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    fraction = rng.random() if fraction is None else fraction
    rows = random_rows(rng, 100, 1, contiguous=False)
    first = TopFraction(fraction)
    for r in rows:
        first.add(score_of(r))
    k = math.floor(round(fraction * 100, 9))
    assert first.count() == k
    got = run(Cutoff(first.cutoff()), rows)
    ranked = sorted(range(100), key=lambda i: rank_key(score_of(rows[i]), i), reverse=True)
    assert got == sorted(ranked[:k]), f"seed {seed} fraction {fraction}"


def test_threshold_keeps_scores_at_or_above_and_never_nan():
    rows = random_rows(random.Random(2), 300, 1, contiguous=False)
    t = 0.5
    got = run(Threshold(t), rows)
    assert got == [r["id"] for r in rows if r["score"] is not None and r["score"] >= t]


def test_score_fields_recompute_the_aggregations():
    rng = np.random.default_rng()
    steps = rng.random(7).tolist()
    row = {"id": "q", "score": 0.3, "step_rewards": [*steps, None], "trajectory_reward": 0.8}
    assert score_of(row, "score") == 0.3
    assert score_of(row, "trajectory_reward") == 0.8
    for agg in ("mean", "min", "last", "prod"):
        assert score_of(row, agg) == aggregate([steps], [0.8], agg, 1.0)[0]
    assert score_of(row, "reasonflux", alpha=1.5) == pytest.approx(np.mean(steps) + 1.5 * 0.8, rel=1e-6)
    # Truncated: no trajectory reward, the last kept step stands in; nothing kept scores NaN.
    trunc = {"step_rewards": [0.2, 0.4, None], "trajectory_reward": None}
    assert score_of(trunc, "reasonflux") == pytest.approx(0.3 + 0.4)
    assert math.isnan(score_of({"step_rewards": [None], "trajectory_reward": None}, "mean"))


def test_score_errors_name_the_row_and_field():
    with pytest.raises(ValueError, match=r"line 4 \(id 'q9'\) has no 'score' field, which --score score needs"):
        score_of({"id": "q9", "problem": "p"}, "score", where="line 4")
    with pytest.raises(ValueError, match=r"row 2: step_rewards must be a list of numbers; got str"):
        score_of({"step_rewards": "0.5", "trajectory_reward": 1.0}, "mean", where="row 2")
    with pytest.raises(ValueError, match=r"score must be a number; got 'high'"):
        score_of({"score": "high"})


def test_rule_checks_its_options():
    with pytest.raises(ValueError, match="give exactly one of --top-k, --top-fraction, --threshold; got 2"):
        SelectRule(top_k=1, threshold=0.5)
    with pytest.raises(ValueError, match="got 0"):
        SelectRule()
    with pytest.raises(ValueError, match=r"--top-fraction must be within \[0, 1\]; got 1.5"):
        SelectRule(top_fraction=1.5)
    with pytest.raises(ValueError, match="--top-k must be >= 1; got 0"):
        SelectRule(top_k=0)
    with pytest.raises(ValueError, match="--score must be one of"):
        SelectRule(top_k=1, score_field="median")
    assert SelectRule(top_fraction=0.1).passes == 2 and SelectRule(threshold=0.2).mode == "threshold"
