"""verl's custom reward function convention: compute_score(data_source, solution_str, ground_truth, extra_info) as
verl's reward managers call it, ReasonFlux's rule/PRM mix, and the final-answer rule."""

import functools
import math
import random

import pytest

from edgeprm.demo.synthetic import generate
from edgeprm.rl import verl
from edgeprm.rl.verl import compute_score, compute_score_batch, final_answer, final_answer_rule
from edgeprm.trajectory import Trajectory


@pytest.fixture(scope="module")
def samples():
    """Fresh synthetic problems, verl-style: the question in extra_info, the gold answer as ground_truth."""
    recs = generate(3, candidates=2, seed=random.randrange(10**6))
    return [dict(data_source="synthetic/arith", solution_str="\n\n".join(r["steps"]),
                 ground_truth=str(r["gold_answer"]), extra_info={"split": "test", "index": i, "question": r["problem"]},
                 is_correct=r["is_correct"], problem=r["problem"], steps=r["steps"]) for i, r in enumerate(recs)]


def call(sample, **kwargs):
    return compute_score(data_source=sample["data_source"], solution_str=sample["solution_str"],
                         ground_truth=sample["ground_truth"], extra_info=sample["extra_info"], **kwargs)


def test_compute_score_is_the_prm_score_without_a_rule(samples, demo):
    for s in samples:
        want = demo.score_batch([Trajectory(s["problem"], s["steps"])])[0].score
        got = call(s)
        assert set(got) == {"score", "prm", "rule"} and math.isnan(got["rule"])
        assert abs(got["prm"] - want) <= 1e-6 and got["score"] == got["prm"]
    assert verl.scorer_for() is verl.scorer_for()  # loaded once per process


def test_a_rule_score_is_mixed_reasonflux_style(samples):
    for s in samples[:2]:  # both candidates of the first problem
        prm = call(s)["prm"]
        given = call({**s, "extra_info": {**s["extra_info"], "rule_score": 1.0}})
        assert abs(given["score"] - (0.25 * 1.0 + 0.75 * prm)) <= 1e-6 and given["rule"] == 1.0
        rule = call(s, rule="final-answer")
        assert rule["rule"] == float(s["is_correct"])
        assert abs(rule["score"] - (0.25 * rule["rule"] + 0.75 * prm)) <= 1e-6
        half = functools.partial(compute_score, beta=0.5, rule=lambda sol, gt: 0.2)  # verl's reward_kwargs
        got = half(s["data_source"], s["solution_str"], s["ground_truth"], s["extra_info"])
        assert abs(got["score"] - (0.5 * 0.2 + 0.5 * prm)) <= 1e-6


def test_batch_convention_matches_one_by_one(samples):
    batch = compute_score_batch(data_sources=[s["data_source"] for s in samples],
                                solution_strs=[s["solution_str"] for s in samples],
                                ground_truths=[s["ground_truth"] for s in samples],
                                extra_infos=[s["extra_info"] for s in samples], rule="final-answer")
    for s, b in zip(samples, batch):
        one = call(s, rule="final-answer")
        assert abs(b["score"] - one["score"]) <= 1e-6 and b["rule"] == one["rule"]
    empty = call({**samples[0], "solution_str": "  "}, empty_reward=-1.0)
    assert empty["prm"] == -1.0


def test_final_answer_rule():
    assert final_answer("so \\boxed{\\frac{1}{2}} and more") == "\\frac{1}{2}"
    assert final_answer("x = 3 #### 1,234") == "1,234"
    assert final_answer("5 * 12 = 60. The answer is 72.") == "72"
    assert final_answer("no number here") is None
    assert final_answer_rule("The answer is $1,234.", "1234") == 1.0
    assert final_answer_rule("\\boxed{3.0}", 3) == 1.0
    assert final_answer_rule("\\boxed{3.5}", "3") == 0.0
    assert final_answer_rule("nothing", "3") == 0.0


def test_errors_name_the_fix(samples):
    s = samples[0]
    with pytest.raises(ValueError, match=r"sample 0: extra_info has none of \('question', 'problem', 'prompt'\)"):
        call({**s, "extra_info": {"index": 0}})
    assert abs(call({**s, "extra_info": {"problem": s["problem"]}})["prm"] - call(s)["prm"]) <= 1e-6
    with pytest.raises(ValueError, match="beta must be between 0 and 1"):
        call(s, beta=1.5)
    with pytest.raises(ValueError, match="rule must be one of"):
        call(s, rule="exact")
    with pytest.raises(ValueError, match="one data_source, ground_truth and extra_info per solution"):
        compute_score_batch(["a"], ["x", "y"], ["1"], None)
