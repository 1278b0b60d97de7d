"""`edgeprm demo --search`: step-level beam search against Best-of-N on held-out synthetic problems.

The proposer stands in for a policy LLM: for each held-out problem it holds a pool of candidate solutions from the
synthetic generator (`edgeprm.demo.synthetic`: correct ones and ones with one injected error, phrased in several
styles) and, for a partial solution, offers next steps drawn from the pool's solutions that continue it — the right
next step or an erroneous one. A path is complete when it is a whole solution of the pool, so every finished path
has a known answer and search accuracy is exact.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from edgeprm.demo.evaluate import HELDOUT_SEED
from edgeprm.demo.synthetic import generate, group_by_problem
from edgeprm.search import beam_search, best_of_n


class SyntheticProposer:
    """`propose(problem, steps, n)` over pools of synthetic candidate solutions (see the module docstring)."""

    def __init__(self, records: list[dict], seed: int = 0):
        self.rng = random.Random(seed)
        self.pool: dict[str, list[dict]] = {}
        for r in records:
            self.pool.setdefault(r["problem"], []).append(r)

    def __call__(self, problem: str, steps: Sequence[str], n: int) -> list[str]:
        steps = list(steps)
        options = [r["steps"][len(steps)] for r in self._continuing(problem, steps) if len(r["steps"]) > len(steps)]
        if not options:
            return []
        return [self.rng.choice(options) for _ in range(n)]

    def _continuing(self, problem: str, steps: list[str]) -> list[dict]:
        if problem not in self.pool:
            raise ValueError(f"the proposer has no solutions for problem {problem[:60]!r}")
        return [r for r in self.pool[problem] if r["steps"][: len(steps)] == steps]

    def is_correct(self, problem: str, steps: Sequence[str]) -> bool:
        """Whether `steps` is a whole correct solution of the pool."""
        return any(r["is_correct"] and r["steps"] == list(steps) for r in self.pool[problem])


@dataclass(frozen=True)
class StrategyFigures:
    name: str
    accuracy: float
    tokens_per_problem: float
    seconds: float


def compare(scorer, n_problems: int = 100, beam_width: int = 4, expansions: int = 4, pool: int = 16,
            seed: int = HELDOUT_SEED, progress: bool = False) -> list[StrategyFigures]:
    """Accuracy and backbone tokens per problem of beam search (sessions), beam search re-scoring every prefix,
    Best-of-N with N = beam_width x expansions (the same PRM budget per step), and a random pick."""
    records = generate(n_problems, candidates=pool, seed=seed)
    groups = group_by_problem(records)
    n = beam_width * expansions
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=4 * len(groups), unit="problem", desc="search")

    def measure(name, run) -> StrategyFigures:
        proposer = SyntheticProposer(records, seed)
        correct, tokens, t0 = 0, 0, time.perf_counter()
        for g in groups:
            problem = g[0]["problem"]
            r = run(problem, proposer)
            correct += proposer.is_correct(problem, r.steps)
            tokens += r.backbone_tokens
            if bar is not None:
                bar.update(1)
        return StrategyFigures(name, correct / len(groups), tokens / len(groups), time.perf_counter() - t0)

    beam = f"beam search {beam_width}x{expansions}"
    out = [measure(f"{beam} (sessions)",
                   lambda p, prop: beam_search(prop, scorer, p, beam_width=beam_width, expansions=expansions)),
           measure(f"{beam} (re-scoring)", lambda p, prop: beam_search(prop, scorer, p, beam_width=beam_width,
                                                                        expansions=expansions, cache=False)),
           measure(f"best-of-{n}", lambda p, prop: best_of_n(prop, scorer, p, n=n))]
    # Best-of-N at the beam's budget: N scaled by the tokens each Best-of-N candidate cost.
    equal = max(1, round(n * out[0].tokens_per_problem / max(out[2].tokens_per_problem, 1.0)))
    out.append(measure(f"best-of-{equal} (beam's token budget)", lambda p, prop: best_of_n(prop, scorer, p, n=equal)))
    if bar is not None:
        bar.close()
    rng = random.Random(seed)
    random_pick = sum(rng.choice(g)["is_correct"] for g in groups) / len(groups)
    out.append(StrategyFigures("random pick", random_pick, 0.0, 0.0))
    return out


def format_figures(figures: list[StrategyFigures], n_problems: int) -> str:
    lines = [f"Search on {n_problems} held-out synthetic problems (a proposer over 16 candidate solutions each):",
             f"  {'strategy':<38} {'accuracy':>9} {'backbone tokens/problem':>24} {'seconds':>8}"]
    for f in figures:
        lines.append(f"  {f.name:<38} {f.accuracy:>9.1%} {f.tokens_per_problem:>24.0f} {f.seconds:>8.1f}")
    return "\n".join(lines)
