"""Best-of-N accuracy: how often the PRM's pick among a problem's candidates is a correct solution.

Rows are candidates `{"id"?, "problem", "steps"|"solution", "is_correct", "group"?, "answer"?}`, grouped by `group`
(else by identical problem text: `edgeprm.rows.group_rows`). The GSM8K model-solutions file (`question` plus one
solution per solver) is read as its Best-of-4 rows (`edgeprm.datasets.gsm8k_rows`). For each aggregation (`mean`,
`min`, `last`, `prod`, `reasonflux`; one scoring pass serves them all, since each is a function of the step and
trajectory rewards):
- Best-of-N: the candidate with the highest score (first on ties, NaN lowest: `edgeprm.stats.best_index`);
- weighted vote: the final answer with the highest summed score;
and, the same for every model:
- majority vote over final answers, random pick, oracle (a correct candidate exists).
Ties (in votes) and the random pick are expected values over the random choice, not samples. A final answer is the
row's `answer` field, else what `extract_answer` finds in its response or last step; a row without one votes alone.
All figures are in %.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprm.aggregation import AGGREGATIONS, aggregate
from edgeprm.datasets import GSM8K_SOLVERS, gsm8k_rows
from edgeprm.eval.tables import cell, table
from edgeprm.rows import group_label, group_rows, iter_jsonl
from edgeprm.stats import best_index

LABEL_KEY = "is_correct"
ANSWER_KEY = "answer"


def read_bon_rows(path: str | Path, label_key: str = LABEL_KEY) -> list[dict]:
    """Candidate rows of a JSONL file (or the GSM8K model-solutions file); each must carry a boolean `label_key`."""
    path = Path(path)
    numbered = list(iter_jsonl(path))
    if not numbered:
        raise ValueError(f"{path} holds no rows")
    first = numbered[0][1]
    if "question" in first and all(s in first for s in GSM8K_SOLVERS):
        return list(gsm8k_rows(path))
    rows = []
    for n, row in numbered:
        label = row.get(label_key)
        if isinstance(label, bool) or label in (0, 1):
            rows.append(row)
            continue
        raise ValueError(f"{path} line {n}: row {row.get('id')!r} has {label_key}={label!r}; Best-of-N accuracy "
                         f"needs every candidate's {label_key!r} (true or false)")
    return rows


_BOXED = re.compile(r"\\boxed\s*\{")
_PATTERNS = (re.compile(r"####\s*(.+)"), re.compile(r"(?m)^\s*A:\s*(.+)$"),
             re.compile(r"(?i)answer is[:\s]*(.+)"))


def _boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, i = 1, starts[-1]
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def normalise_answer(text: str) -> str | None:
    """Compare answers as written, less formatting: '$1,200.' -> '1200', '18.0' -> '18'; None if empty."""
    t = text.strip().strip(".").replace("$", "").replace(",", "").replace("\\!", "").strip()
    t = re.sub(r"\\text\{([^}]*)\}", r"\1", t).strip()
    if not t:
        return None
    try:
        v = float(t)
    except ValueError:
        return t
    return str(int(v)) if math.isfinite(v) and v == int(v) else repr(v)


def extract_answer(text: str) -> str | None:
    """The final answer a solution states: the last `\\boxed{...}`, else `#### x`, `A: x`, or `answer is x` (the
    last of them), normalised (`normalise_answer`); None when it states none."""
    found = _boxed(text)
    if found is None:
        hits = [m for p in _PATTERNS for m in p.finditer(text)]
        if not hits:
            return None
        found = max(hits, key=lambda m: m.start()).group(1)
        found = found.split("\n")[0]
    return normalise_answer(found)


def row_answer(row: dict, answer_key: str = ANSWER_KEY) -> str | None:
    """A row's final answer: its `answer_key` field, else extracted from its response, last step or solution."""
    if row.get(answer_key) is not None:
        return normalise_answer(str(row[answer_key]))
    if row.get("response"):
        return extract_answer(row["response"])
    steps = row.get("steps")
    if isinstance(steps, list) and steps and isinstance(steps[-1], str):
        return extract_answer(steps[-1])
    return extract_answer(row["solution"]) if isinstance(row.get("solution"), str) else None


def vote_accuracy(answers: Sequence[str | None], correct: Sequence[bool], weights: Sequence[float]) -> float:
    """Expected correctness of the answer with the largest total weight, ties broken uniformly at random. An
    answer's correctness is the share of its candidates labelled correct; a candidate without an answer votes
    alone."""
    total: dict = defaultdict(float)
    right: dict = defaultdict(list)
    for i, (a, c, w) in enumerate(zip(answers, correct, weights)):
        key = a if a is not None else ("no answer", i)
        total[key] += 0.0 if math.isnan(w) else w
        right[key].append(bool(c))
    top = max(total.values())
    winners = [k for k, v in total.items() if v == top]
    return float(np.mean([np.mean(right[k]) for k in winners]))


@dataclass(frozen=True)
class AggregationResult:
    aggregation: str
    best_of_n: float  # %
    weighted_vote: float  # %


@dataclass(frozen=True)
class BonReport:
    """Everything `edgeprm eval bon` prints for one scorer; accuracies in %."""

    scorer: str
    aggregation: str  # the scorer's own (the gated one)
    n_rows: int
    n_groups: int
    group_sizes: tuple[int, int]  # smallest and largest group
    by_aggregation: tuple[AggregationResult, ...]
    majority_vote: float | None  # None when no row states a final answer
    random_pick: float
    oracle: float
    answers_found: int
    truncated: int
    seconds: float = 0.0

    def figures(self) -> list[tuple[str, float | None, bool]]:
        """(name, value, gated): Best-of-N and weighted vote per aggregation, then the model-free baselines; the
        scorer's own aggregation is gated."""
        out = [(f"Best-of-N, {a.aggregation}", a.best_of_n, a.aggregation == self.aggregation)
               for a in self.by_aggregation]
        out += [(f"weighted vote, {a.aggregation}", a.weighted_vote, False) for a in self.by_aggregation]
        return out + [("majority vote", self.majority_vote, False), ("random pick", self.random_pick, False),
                      ("oracle", self.oracle, False)]

    def to_dict(self) -> dict:
        return asdict(self)


def trajectory_scores(results: Sequence[dict], aggregation: str, alpha: float) -> list[float]:
    """Scores of `aggregation` from scored rows (`step_rewards`, `trajectory_reward`); a truncated row's final reward
    is its last kept step's, as the scorer uses it."""
    steps = [[r for r in res["step_rewards"] if r is not None] for res in results]
    finals = [res["trajectory_reward"] if res["trajectory_reward"] is not None else (s[-1] if s else math.nan)
              for res, s in zip(results, steps)]
    return aggregate(steps, finals, aggregation, alpha)


def bon_report(rows: Sequence[dict], results: Sequence[dict], scorer: str, aggregation: str, alpha: float = 1.0,
               group_key: str = "group", answer_key: str = ANSWER_KEY, label_key: str = LABEL_KEY) -> BonReport:
    """Best-of-N figures of scored candidate rows; `results[i]` holds row i's `step_rewards`, `trajectory_reward`
    and `score` (the scorer's own aggregation, used as is)."""
    if len(rows) != len(results):
        raise ValueError(f"need one result per row; got {len(results)} for {len(rows)} rows")
    if not rows:
        raise ValueError("Best-of-N needs at least one row; got 0")
    groups = list(group_rows(rows, group_key).values())
    correct = [bool(r[label_key]) for r in rows]
    answers = [row_answer(r, answer_key) for r in rows]
    by_agg = []
    for agg in AGGREGATIONS:
        scores = ([float("nan") if r["score"] is None else float(r["score"]) for r in results]
                  if agg == aggregation else trajectory_scores(results, agg, alpha))
        bon = [correct[g[best_index([scores[i] for i in g])]] for g in groups]
        vote = [vote_accuracy([answers[i] for i in g], [correct[i] for i in g], [scores[i] for i in g])
                for g in groups]
        by_agg.append(AggregationResult(agg, 100 * float(np.mean(bon)), 100 * float(np.mean(vote))))
    found = sum(a is not None for a in answers)
    majority = (100 * float(np.mean([vote_accuracy([answers[i] for i in g], [correct[i] for i in g], [1.0] * len(g))
                                     for g in groups])) if found else None)
    return BonReport(
        scorer=scorer, aggregation=aggregation, n_rows=len(rows), n_groups=len(groups),
        group_sizes=(min(map(len, groups)), max(map(len, groups))), by_aggregation=tuple(by_agg),
        majority_vote=majority, random_pick=100 * float(np.mean([np.mean([correct[i] for i in g]) for g in groups])),
        oracle=100 * float(np.mean([any(correct[i] for i in g) for g in groups])), answers_found=found,
        truncated=sum(bool(r.get("truncated")) for r in results))


def format_report(r: BonReport) -> str:
    n = f"{r.group_sizes[0]}" if r.group_sizes[0] == r.group_sizes[1] else f"{r.group_sizes[0]}-{r.group_sizes[1]}"
    lines = [f"Best-of-{n}, {r.scorer}: {r.n_groups} problems, {r.n_rows} candidates ({r.truncated} truncated); "
             "accuracy in %", *table(["aggregation", "Best-of-N", "weighted vote"],
                                     [[a.aggregation + (" (the scorer's)" if a.aggregation == r.aggregation else ""),
                                       cell(a.best_of_n), cell(a.weighted_vote)] for a in r.by_aggregation]),
             f"majority vote {cell(r.majority_vote)} | random pick {cell(r.random_pick)} | oracle {cell(r.oracle)} "
             f"(final answers found in {r.answers_found} of {r.n_rows} candidates)"]
    return "\n".join(lines)


class BonTask:
    """Best-of-N rows as an evaluation `edgeprm.eval.gate` runs: scorer inputs, keys, report, per-row fields."""

    name = "bon"

    def __init__(self, rows: Sequence[dict], group_key: str = "group", answer_key: str = ANSWER_KEY,
                 label_key: str = LABEL_KEY):
        self.rows, self.group_key, self.answer_key, self.label_key = list(rows), group_key, answer_key, label_key
        self.keys = [str(r["id"]) if r.get("id") is not None else f"row {i}" for i, r in enumerate(self.rows)]
        seen: set[str] = set()
        for k in self.keys:
            if k in seen:
                raise ValueError(f"id {k!r} occurs more than once; Best-of-N rows need unique ids (or none)")
            seen.add(k)
        self.inputs = self.rows
        self.groups = [group_label(r, group_key) for r in self.rows]

    def evaluate(self, results: Sequence[dict], scorer, name: str) -> BonReport:
        return bon_report(self.rows, results, name, scorer.aggregation, scorer.alpha, self.group_key,
                          self.answer_key, self.label_key)

    def extra(self, results: Sequence[dict]):
        return lambda i: {"id": self.rows[i].get("id"), "group": self.groups[i],
                          self.label_key: bool(self.rows[i][self.label_key]),
                          "answer": row_answer(self.rows[i], self.answer_key)}

    def parity_rows(self, results: Sequence[dict]) -> list[dict]:
        return [{"id": k, "group": g, "problem": r.get("problem"), LABEL_KEY: bool(r[self.label_key]), **res}
                for k, g, r, res in zip(self.keys, self.groups, self.rows, results)]

    def agreement(self, reference: Sequence[dict], candidate: Sequence[dict]) -> list[tuple[str, float]]:
        return []

    @staticmethod
    def format(report: BonReport) -> str:
        return format_report(report)
