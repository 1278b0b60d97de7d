"""PRM-guided search at test time: step-level beam search and Best-of-N behind one interface.

The caller brings the policy: `propose(problem, steps, n) -> list[str]` returns up to `n` candidate next steps for
a partial solution (sampled from an LLM, say), or an empty list when `steps` is already a complete solution.

    result = beam_search(propose, scorer, problem, beam_width=4, expansions=4, max_steps=20)
    result.steps, result.step_rewards, result.score, result.backbone_tokens

`beam_search` keeps the `beam_width` best partial solutions; each iteration asks for `expansions` next steps per
beam and scores all of them in one batched call. With `cache=True` (the torch backend) every beam is a KV-cached
session (`edgeprm.backends.session`) and its expansions are forks of it, so a step costs the backbone its own tokens
only;
`cache=False` re-scores every partial solution from its first token, as a search loop without sessions does (and
as the ONNX backend must). `best_of_n` samples `n` whole solutions step by step from the same proposer and picks
the best (its candidates share their prompt's computation). Both report the backbone tokens they spent, so two
strategies can be compared at equal PRM budget (`edgeprm demo --search`, `bench/bench_search.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeprm.aggregation import aggregate
from edgeprm.stats import best_index
from edgeprm.trajectory import Trajectory, check_problem

Proposer = Callable[[str, Sequence[str], int], Sequence[str]]
SELECT = ("last", "score")  # rank partial solutions by their newest step's reward, or by the aggregated score


@dataclass(frozen=True)
class SearchResult:
    """The chosen solution, its rewards as `scorer.score` gives them, and what finding it cost."""

    steps: tuple[str, ...]
    step_rewards: list[float | None]
    score: float
    complete: bool  # the proposer declared it finished (else the step limit or the beam ran out)
    backbone_tokens: int  # tokens the PRM's backbone ran on
    prm_calls: int  # batched scoring calls
    candidates: int = 0  # partial or whole solutions scored
    finished: list[tuple[tuple[str, ...], float]] = field(default_factory=list)  # every finished path, its score


class _Budget:
    """Counts the backbone tokens and calls a search spends (the torch scorer counts its own tokens)."""

    def __init__(self, scorer):
        self.scorer, self.calls = scorer, 0
        self.start = getattr(scorer, "backbone_tokens", None)
        self.counted = 0

    def add(self, results) -> None:
        self.calls += 1
        if self.start is None:
            self.counted += sum(r.num_tokens for r in results)

    @property
    def tokens(self) -> int:
        return self.scorer.backbone_tokens - self.start if self.start is not None else self.counted


def _check(propose, beam_width: int, expansions: int, max_steps: int, select: str) -> None:
    if not callable(propose):
        raise ValueError("propose must be a callable propose(problem, steps, n) -> list of next-step strings")
    for name, v in (("beam_width", beam_width), ("expansions", expansions), ("max_steps", max_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}; got {select!r}")


def _proposals(propose, problem: str, steps: tuple[str, ...], n: int) -> list[str]:
    out = list(propose(problem, list(steps), n))
    for i, s in enumerate(out):
        if not isinstance(s, str) or not s.strip():
            raise ValueError(f"propose returned an empty or non-string step at index {i} after {len(steps)} steps: "
                             f"{s!r}")
    return out[:n]


@dataclass
class _Path:
    steps: tuple[str, ...]
    rewards: list[float]
    session: object = None


def beam_search(propose: Proposer, scorer, problem: str, *, beam_width: int = 4, expansions: int = 4,
                max_steps: int = 20, cache: bool = True, select: str = "last", dedupe: bool = True) -> SearchResult:
    """Step-level beam search guided by the PRM (see the module docstring).

    select: rank partial solutions by their newest step's reward ("last") or by the scorer's aggregation of all
    their step rewards ("score"). dedupe: identical partial solutions are scored once. The result is the finished
    path with the highest score (a complete one if any), scored as `scorer.score` scores it.
    """
    _check(propose, beam_width, expansions, max_steps, select)
    check_problem(problem)
    budget = _Budget(scorer)
    root = scorer.session(problem) if cache else None
    beams = [_Path((), [], root)]
    finished: list[tuple[_Path, bool]] = []
    scored = 0
    for _ in range(max_steps):
        children: list[tuple[_Path, str]] = []
        seen = set()
        for beam in beams:
            nexts = _proposals(propose, problem, beam.steps, expansions)
            if not nexts:
                if beam.steps:
                    finished.append((beam, True))
                continue
            for text in nexts:
                key = beam.steps + (text,)
                if dedupe and key in seen:
                    continue
                seen.add(key)
                children.append((beam, text))
        if not children:
            beams = []
            break
        if cache:
            forks = [parent.session.fork() for parent, _ in children]
            rewards = scorer.extend(forks, [text for _, text in children])
            budget.add(())
        else:
            results = scorer.score_batch([Trajectory(problem, parent.steps + (text,)) for parent, text in children])
            rewards = [r.step_rewards[-1] for r in results]
            budget.add(results)
            forks = [None] * len(children)
        scored += len(children)
        paths = [_Path(parent.steps + (text,), parent.rewards + [r], f)
                 for (parent, text), r, f in zip(children, rewards, forks)]
        value = [_value(p, scorer, select) for p in paths]
        order = sorted(range(len(paths)), key=lambda i: -value[i])
        beams = [paths[i] for i in order[:beam_width]]
    finished += [(b, False) for b in beams if b.steps]
    if not finished:
        raise ValueError("the proposer gave no first step: nothing to score")
    return _pick(scorer, problem, finished, budget, scored, cache)


def _value(path: _Path, scorer, select: str) -> float:
    r = path.rewards[-1]
    if select == "score":
        r = aggregate([[x for x in path.rewards if x is not None]], [path.rewards[-1]], scorer.aggregation,
                      scorer.alpha)[0]
    return float("-inf") if r is None or r != r else float(r)


def _pick(scorer, problem, finished, budget, scored, cache) -> SearchResult:
    complete = [(p, c) for p, c in finished if c] or finished
    if cache:
        results = [p.session.finish() for p, _ in complete]
    else:
        results = scorer.score_batch([Trajectory(problem, p.steps) for p, _ in complete])
    budget.add(results if not cache else ())
    best = best_index([r.score for r in results])
    path, done = complete[best]
    r = results[best]
    return SearchResult(path.steps, r.step_rewards, r.score, done, budget.tokens, budget.calls, scored,
                        [(p.steps, res.score) for (p, _), res in zip(complete, results)])


def sample_solution(propose: Proposer, problem: str, max_steps: int) -> tuple[tuple[str, ...], bool]:
    """One whole solution drawn step by step from the proposer; whether it finished within `max_steps`."""
    steps: tuple[str, ...] = ()
    for _ in range(max_steps):
        nexts = _proposals(propose, problem, steps, 1)
        if not nexts:
            return steps, True
        steps += (nexts[0],)
    return steps, not _proposals(propose, problem, steps, 1)


def best_of_n(propose: Proposer, scorer, problem: str, *, n: int = 16, max_steps: int = 20) -> SearchResult:
    """Best-of-N with the search interface: `n` solutions sampled from the proposer, the best by `scorer`'s
    score (candidates of one problem share their prompt's computation on the torch backend)."""
    _check(propose, 1, n, max_steps, "last")
    check_problem(problem)
    budget = _Budget(scorer)
    drawn = [sample_solution(propose, problem, max_steps) for _ in range(n)]
    drawn = [(s, c) for s, c in drawn if s]
    if not drawn:
        raise ValueError("the proposer gave no first step: nothing to score")
    best, results = scorer.best_of_n(problem, [list(s) for s, _ in drawn])
    budget.add(results)
    r = results[best]
    return SearchResult(drawn[best][0], r.step_rewards, r.score, drawn[best][1], budget.tokens, budget.calls,
                        len(drawn), [(s, res.score) for (s, _), res in zip(drawn, results)])
