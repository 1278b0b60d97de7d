"""What every backend shares: results independent of batching, the token budget, Best-of-N, prepare."""

import random

import pytest
import torch

from edgeprm.trajectory import Trajectory

FAMILIES = ["step-classifier", "value-head", "token-prob"]


def make_items(rng: random.Random, n: int) -> list[Trajectory]:
    items = []
    for i in range(n):
        k = rng.randint(1, 6)
        steps = [f"step {j}: {rng.randint(1, 999)} * {rng.randint(1, 9)} is {'x ' * rng.randint(0, 30)}done."
                 for j in range(k)]
        response = f"The answer is {rng.randint(1, 99)}." if rng.random() < 0.3 else None
        items.append(Trajectory(f"Problem {i}: {'words ' * rng.randint(1, 40)}?", steps, response, id=str(i)))
    return items


def flat(results):
    return torch.tensor([x for r in results for x in [*r.step_rewards, r.trajectory_reward, r.score]])


@pytest.mark.parametrize("family", FAMILIES)
def test_results_do_not_depend_on_batching_order_or_padding(scorers, family):
    s = scorers[family]
    items = make_items(random.Random(), 12)
    alone = []
    for it in items:  # one trajectory per forward: no padding at all
        alone += s.score_batch([it])
    saved = (s.token_budget, s.padding_side)
    try:
        for budget, side in [(100_000, "right"), (100_000, "left"), (300, "left"), (600, "right")]:
            s.token_budget, s.padding_side = budget, side
            order = list(range(len(items)))
            random.shuffle(order)
            shuffled = s.score_batch([items[i] for i in order])
            back = [None] * len(items)
            for pos, i in enumerate(order):
                back[i] = shuffled[pos]
            torch.testing.assert_close(flat(back), flat(alone), atol=1e-5, rtol=0)
            assert [r.id for r in back] == [it.id for it in items]
    finally:
        s.token_budget, s.padding_side = saved


def test_batches_respect_the_token_budget(scorers):
    s = scorers["step-classifier"]
    lengths = [random.randint(5, 300) for _ in range(100)]
    saved = s.token_budget
    s.token_budget = 1000
    try:
        groups = s.batches(lengths)
    finally:
        s.token_budget = saved
    assert sorted(i for g in groups for i in g) == list(range(100))
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 1000


def test_best_of_n_picks_the_highest_score(scorers):
    s = scorers["value-head"]
    cands = [["a + b = c", "so c"], "first line\n\nsecond line", ["only one step here"]]
    best, results = s.best_of_n("Which is best?", cands)
    assert len(results) == 3
    assert results[best].score == max(r.score for r in results)
    with pytest.raises(ValueError, match="at least one candidate"):
        s.best_of_n("Which?", [])


def test_prepare_checks_one_row_and_scoring_prepared_rows_is_score_batch(scorers):
    from edgeprm.backends.base import Prepared

    s = scorers["token-prob"]
    items = make_items(random.Random(), 6)
    prepared = [s.prepare(it) for it in items]
    assert all(isinstance(p, Prepared) and p.id == it.id for p, it in zip(prepared, items))
    torch.testing.assert_close(flat(s.score_prepared(prepared)), flat(s.score_batch(items)), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"step 0 is empty for id 'x'"):
        s.prepare({"id": "x", "problem": "p", "steps": [" "]})
    with pytest.raises(ValueError, match=r"row for id 'y' has no 'problem' field"):
        s.prepare({"id": "y", "steps": ["a"]})


def test_length_buckets_cover_every_index_once_and_respect_the_budget():
    from edgeprm.backends.base import length_buckets

    rng = random.Random()
    lengths = [rng.randint(1, 400) for _ in range(rng.randint(1, 200))]
    for groups in (length_buckets(lengths, 1000, 7), length_buckets(lengths, 1000, rng=random.Random(3))):
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 1000 for g in groups)
    assert all(len(g) <= 7 for g in length_buckets(lengths, 10**9, 7))
    # Training's shuffled buckets are reproducible from the seed.
    assert length_buckets(lengths, 900, rng=random.Random(5)) == length_buckets(lengths, 900, rng=random.Random(5))
