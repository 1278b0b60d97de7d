"""edgeprm.search: beam search with sessions equals beam search re-scoring every prefix, for fewer tokens."""

import random

import pytest

from edgeprm.search import beam_search, best_of_n


def tree_proposer(seed: int, depth: int = 6, width: int = 3):
    """A deterministic policy: a fixed tree of next steps (`width` per node, solutions `depth` steps long)."""
    def propose(problem, steps, n):
        if len(steps) >= depth:
            return []
        rng = random.Random(f"{seed}|{problem}|{'|'.join(steps)}")
        options = [f"{rng.randint(1, 99)} {rng.choice('+-*')} {rng.randint(1, 9)} = {rng.randint(1, 999)}."
                   for _ in range(width)]
        return [options[i % width] for i in range(n)]
    return propose


@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_beam_search_with_sessions_equals_rescoring(scorers, family):
    scorer = scorers[family]
    seed = random.randrange(10**6)
    propose = tree_proposer(seed)
    problem = "Ana has 4 boxes of 12 eggs and breaks 5. How many are whole?"
    a = beam_search(propose, scorer, problem, beam_width=2, expansions=3, max_steps=10)
    b = beam_search(propose, scorer, problem, beam_width=2, expansions=3, max_steps=10, cache=False)
    assert a.steps == b.steps and a.complete and len(a.steps) == 6, f"seed {seed}"
    assert abs(a.score - b.score) <= 1e-5
    want = scorer.score(problem, list(a.steps))
    assert abs(a.score - want.score) <= 1e-5 and a.step_rewards == pytest.approx(want.step_rewards, abs=1e-5)
    assert a.score == max(s for _, s in a.finished)
    assert 0 < a.backbone_tokens < b.backbone_tokens, (a.backbone_tokens, b.backbone_tokens)
    assert a.candidates == b.candidates and a.prm_calls == b.prm_calls


def test_best_of_n_and_limits(scorers):
    scorer = scorers["step-classifier"]
    propose = tree_proposer(random.randrange(10**6), depth=3)
    problem = "What is 6 times 7?"
    r = best_of_n(propose, scorer, problem, n=5)
    assert r.complete and len(r.steps) == 3 and r.candidates == 5
    assert abs(r.score - scorer.score(problem, list(r.steps)).score) <= 1e-5
    assert r.score == max(s for _, s in r.finished) and r.backbone_tokens > 0
    short = beam_search(propose, scorer, problem, beam_width=2, expansions=2, max_steps=2)
    assert len(short.steps) == 2 and not short.complete
    with pytest.raises(ValueError, match="beam_width must be a positive integer"):
        beam_search(propose, scorer, problem, beam_width=0)
    with pytest.raises(ValueError, match="select must be one of"):
        beam_search(propose, scorer, problem, select="mean")
    with pytest.raises(ValueError, match="no first step"):
        beam_search(lambda p, s, n: [], scorer, problem)
    with pytest.raises(ValueError, match="empty or non-string step at index 1"):
        beam_search(lambda p, s, n: ["ok", ""], scorer, problem)


def test_beam_search_without_cache_runs_on_the_onnx_backend(bundle, scorers):
    import edgeprm

    onnx = edgeprm.load(bundle("step-classifier"), backend="onnx")
    propose = tree_proposer(random.randrange(10**6), depth=3)
    problem = "Ben has 9 packs of 6 cards. How many cards?"
    with pytest.raises(NotImplementedError, match="need the torch backend"):
        beam_search(propose, onnx, problem)
    a = beam_search(propose, onnx, problem, beam_width=2, expansions=2, cache=False)
    b = beam_search(propose, scorers["step-classifier"], problem, beam_width=2, expansions=2)
    assert a.steps == b.steps and abs(a.score - b.score) <= 1e-4
    assert a.backbone_tokens > b.backbone_tokens > 0
