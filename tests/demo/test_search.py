"""The demo's search comparison: a proposer over generator solutions, and beam search finding correct ones."""

from edgeprm.demo.search import SyntheticProposer, compare
from edgeprm.demo.synthetic import generate


def test_proposer_follows_pool_solutions():
    records = generate(3, candidates=8, seed=7)
    prop = SyntheticProposer(records, seed=1)
    problem = records[0]["problem"]
    pool = [r["steps"] for r in records if r["problem"] == problem]
    steps = []
    while True:
        nexts = prop(problem, steps, 3)
        if not nexts:
            break
        assert len(nexts) == 3 and all(any(p[: len(steps) + 1] == steps + [n] for p in pool) for n in nexts)
        steps.append(nexts[0])
    assert steps in pool
    assert prop.is_correct(problem, steps) == next(r["is_correct"] for r in records if r["steps"] == steps)


def test_beam_search_on_the_demo_prm():
    import edgeprm

    sessions, rescoring, bon, equal, random_pick = compare(edgeprm.load(None, device="cpu"), n_problems=12)
    assert sessions.accuracy > random_pick.accuracy
    assert sessions.accuracy == rescoring.accuracy  # the same proposals, the same rewards
    assert 0 < sessions.tokens_per_problem < rescoring.tokens_per_problem / 2
    assert bon.name == "best-of-16" and equal.tokens_per_problem < bon.tokens_per_problem
