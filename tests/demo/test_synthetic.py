"""The synthetic arithmetic generator: determinism, labels, arithmetic, error mixes."""

import random

import pytest

from edgeprm.demo.synthetic import ERROR_KINDS, SLIPS, ErrorMix, generate, group_by_problem, parse_expressions

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


def holds(expr) -> bool:
    a, op, b, c = expr
    return OPS[op](a, b) == c


def test_same_seed_same_records_other_seed_other_records():
    seed = random.randrange(10**6)
    assert generate(20, seed=seed) == generate(20, seed=seed)
    assert generate(20, seed=seed) != generate(20, seed=seed + 1)


def test_shape_and_labels(records):
    groups = group_by_problem(records)
    assert len(groups) == 300 and all(len(g) == 4 for g in groups)
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        n = len(r["steps"])
        assert len(r["step_labels"]) == n >= 3
        if r["is_correct"]:
            assert r["first_error"] is None and r["error_kind"] is None and r["error_char"] is None
            assert r["step_labels"] == [1] * n and r["answer"] == r["gold_answer"]
        else:
            k = r["first_error"]
            assert 0 <= k < n and r["error_kind"] in ERROR_KINDS and r["answer"] != r["gold_answer"]
            # PRM800K / ProcessBench convention: every step from the first error on is bad.
            assert r["step_labels"] == [1] * k + [0] * (n - k)
            assert 0 <= r["error_char"] <= len(r["steps"][k])
        assert str(r["answer"]) in r["steps"][-1]


def test_arithmetic_of_every_step(records):
    for r in records:
        exprs = [parse_expressions(s) for s in r["steps"][:-1]]
        assert all(len(e) == 1 for e in exprs), r["steps"]
        exprs = [e[0] for e in exprs]
        wrong_result = r["error_kind"] == "result"
        for i, e in enumerate(exprs):
            # Only a `result` error writes a false equation; the other kinds compute correctly from a wrong input.
            assert holds(e) != (wrong_result and i == r["first_error"]), (r["id"], r["steps"])
        if r["is_correct"] or r["first_error"] < len(exprs):
            assert exprs[-1][3] == r["answer"]


def test_error_mix_and_best_of_n_is_measurable(records):
    wrong = [r for r in records if not r["is_correct"]]
    kinds = {k: sum(r["error_kind"] == k for r in wrong) for k in ERROR_KINDS}
    assert all(c > 0.15 * len(wrong) for c in kinds.values()), kinds
    assert 0.3 < 1 - len(wrong) / len(records) < 0.6
    groups = group_by_problem(records)
    mixed = sum(any(r["is_correct"] for r in g) and not all(r["is_correct"] for r in g) for g in groups)
    assert mixed > 0.6 * len(groups)
    # Wrong candidates often share the same wrong answer, so majority voting is not an oracle.
    shared = sum(len({r["answer"] for r in g if not r["is_correct"]}) < sum(not r["is_correct"] for r in g)
                 for g in groups)
    assert shared > 0.2 * len(groups)


def slips_in(records) -> list[int]:
    """How far the wrong result of each `result` error in a + or - step is from the true one (x * y steps may slip
    by a whole group instead), leaving out digit swaps (9 or more)."""
    out = []
    for r in records:
        if r["error_kind"] == "result":
            a, op, b, c = parse_expressions(r["steps"][r["first_error"]])[0]
            if op in "+-" and abs(c - OPS[op](a, b)) < 9:
                out.append(c - OPS[op](a, b))
    return out


def test_training_error_mix_shifts_kinds_and_slips_and_the_default_is_the_evaluation_mix(records):
    seed = random.randrange(10**6)
    assert generate(50, seed=seed, errors=ErrorMix()) == generate(50, seed=seed)
    mix = ErrorMix(kinds=(3.0, 1.0, 1.0), slips=(2, -2, 4, -4))
    shifted = [r for r in generate(300, seed=seed, errors=mix) if not r["is_correct"]]
    share = sum(r["error_kind"] == "result" for r in shifted) / len(shifted)
    assert 0.45 < share < 0.75, share  # 3/5 of the draws (some draws are invalid for a chain and redrawn)
    assert set(slips_in(shifted)) == {2, -2, 4, -4}
    assert set(slips_in(records)) == set(SLIPS)
    with pytest.raises(ValueError, match="kinds"):
        generate(1, errors=ErrorMix(kinds=(0.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match="last digit"):
        generate(1, errors=ErrorMix(slips=(10, -20)))
