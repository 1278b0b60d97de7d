"""What `edgeprm select` keeps: the score of a row, and the three rules (threshold, top-k per group, top-fraction).

A row's key is one number read from its rewards (`score_of`): the scorer's `score`, its `trajectory_reward`, or an
aggregation recomputed from the stored step rewards (`mean`, `min`, `last`, `prod`, `reasonflux` with `alpha`).
Rows are ranked by (key, earlier first), NaN and None lowest — the order `edgeprm.stats.best_index` picks by, so
top-1 of a group is the group's Best-of-N pick.

- `Threshold`: keeps key >= t as rows arrive; holds nothing.
- `TopK`: a min-heap of at most k rows per open group. A group is open until the end of the input, or, with
  `contiguous=True` (the rows of a group are adjacent, as `edgeprm score` writes N candidates per problem), until
  the next group starts: then only one group is held at a time.
- `TopFraction`: the best floor(f * N) rows of all N. N and the cut-off are known only after every row has been
  seen, so this is two passes: the first keeps one float per row (8 bytes; not the rows) and finds the exact
  cut-off (`TopFraction.cutoff`), the second keeps the rows at or above it (`Cutoff`). A bounded single-pass
  structure cannot do it exactly: a heap of the best rows grows with f * N, and a quantile sketch is approximate
  (the count and the ties at the cut would be off). Ties at the cut go to the earlier rows, as everywhere.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeprm.aggregation import AGGREGATIONS, aggregate
from edgeprm.rows import group_label

SCORE_FIELDS = ("score", "trajectory_reward", *AGGREGATIONS)
MODES = ("top-k", "top-fraction", "threshold")


def needs_fields(field: str) -> tuple[str, ...]:
    """The row fields a score field is computed from (all present = the row is already scored)."""
    if field in ("score", "trajectory_reward"):
        return (field,)
    return ("step_rewards", "trajectory_reward")


def _name(row: dict, where: str | None) -> str:
    rid = row.get("id")
    lead = where or "a row"
    return f"{lead} (id {rid!r})" if rid is not None else lead


def score_of(row: dict, field: str = "score", alpha: float = 1.0, where: str | None = None) -> float:
    """The key a row is ranked by (a Python float; NaN when the rewards give none, e.g. a truncated trajectory with
    no kept step). Raises ValueError naming the row when a needed field is missing or not a number."""
    missing = [f for f in needs_fields(field) if f not in row]
    if missing:
        raise ValueError(f"{_name(row, where)} has no {' or '.join(map(repr, missing))} field, which --score {field} "
                         "needs: score the file first (leave out --scored), or pick another --score")
    if field in ("score", "trajectory_reward"):
        return _number(row[field], row, field, where)
    steps = row["step_rewards"]
    if not isinstance(steps, (list, tuple)):
        raise ValueError(f"{_name(row, where)}: step_rewards must be a list of numbers; got {type(steps).__name__}")
    kept = [_number(s, row, "step_rewards", where) for s in steps if s is not None]
    final = row["trajectory_reward"]
    # A truncated trajectory has no trajectory reward; the scorer stands in the last kept step's value.
    final = _number(final, row, "trajectory_reward", where) if final is not None else (kept[-1] if kept else math.nan)
    return aggregate([kept], [final], field, alpha)[0]


def _number(v, row: dict, field: str, where: str | None) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{_name(row, where)}: {field} must be a number; got {v!r}")
    return float(v)


def rank_key(score: float, index: int) -> tuple[float, int]:
    """Larger is better: higher score, then the earlier row; NaN ranks lowest."""
    return (-math.inf if math.isnan(score) else score, -index)


class Threshold:
    """Keep rows whose key is >= t (NaN never passes)."""

    def __init__(self, t: float):
        self.t = float(t)

    def offer(self, index: int, row: dict, score: float, where: str | None = None) -> list[tuple[int, dict]]:
        return [(index, row)] if score >= self.t else []

    held = 0

    def finish(self) -> list[tuple[int, dict]]:
        return []


class Cutoff(Threshold):
    """Keep rows ranked at or above `cutoff` (a `rank_key`): the second pass of `TopFraction`."""

    def __init__(self, cutoff: tuple[float, int] | None):
        self.cutoff = cutoff

    def offer(self, index: int, row: dict, score: float, where: str | None = None) -> list[tuple[int, dict]]:
        keep = self.cutoff is not None and rank_key(score, index) >= self.cutoff
        return [(index, row)] if keep else []


class TopK:
    """The k best rows of each group (groups as `edgeprm.rows.group_label` forms them), emitted in input order."""

    def __init__(self, k: int, key: str = "problem", fallback: str = "problem", contiguous: bool = False):
        if k < 1:
            raise ValueError(f"--top-k must be >= 1; got {k}")
        self.k, self.key, self.fallback, self.contiguous = k, key, fallback, contiguous
        self.heaps: dict[str, list] = {}
        self.closed: set[bytes] = set()  # 16-byte digests of finished groups (contiguous mode), to catch a repeat
        self.current: str | None = None
        self.groups = 0
        self.held = 0  # rows held right now (at most k per open group)

    def label(self, row: dict) -> str:
        return group_label(row, self.key, self.fallback)

    def offer(self, index: int, row: dict, score: float, where: str | None = None) -> list[tuple[int, dict]]:
        label = self.label(row)
        out = []
        if self.contiguous and label != self.current:
            if self.current is not None:
                out = self._close(self.current)
            digest = hashlib.blake2b(label.encode(), digest_size=16).digest()
            if digest in self.closed:
                raise ValueError(f"{_name(row, where)}: group {label[:80]!r} appears again after other groups, so "
                                 "its rows are not adjacent; drop --contiguous-groups (every group is then held to "
                                 "the end)")
            self.closed.add(digest)
            self.current = label
        heap = self.heaps.get(label)
        if heap is None:
            heap = self.heaps[label] = []
            self.groups += 1
        item = (rank_key(score, index), index, row)
        if len(heap) < self.k:
            heapq.heappush(heap, item)
            self.held += 1
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
        return out

    def _close(self, label: str) -> list[tuple[int, dict]]:
        heap = self.heaps.pop(label)
        self.held -= len(heap)
        return sorted(((i, r) for _, i, r in heap), key=lambda x: x[0])

    def finish(self) -> list[tuple[int, dict]]:
        out = [x for label in list(self.heaps) for x in self._close(label)]
        return sorted(out, key=lambda x: x[0])


class TopFraction:
    """First pass of top-fraction selection: one float per row, then the exact cut-off (`cutoff`)."""

    def __init__(self, fraction: float):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"--top-fraction must be within [0, 1]; got {fraction}")
        self.fraction = fraction
        self.scores = array("d")

    def add(self, score: float) -> None:
        self.scores.append(score)

    def count(self) -> int:
        """floor(f * N), robust to f * N landing a hair under an integer (0.29 * 100 = 28.999999999999996)."""
        return min(len(self.scores), math.floor(self.fraction * len(self.scores) + 1e-9))

    def cutoff(self) -> tuple[float, int] | None:
        """The rank_key of the last row kept (None when none is), so that exactly `count()` rows are >= it."""
        return top_cutoff(self.scores, self.count())


def top_cutoff(scores: Sequence[float], k: int) -> tuple[float, int] | None:
    """rank_key of the k-th best of `scores` (ranked as `rank_key` ranks), None for k = 0. O(N log N), 16 B/row."""
    if k <= 0:
        return None
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.lexsort((np.arange(len(s)), -s))  # best first: score descending, then index ascending
    i = int(order[k - 1])
    return rank_key(float(scores[i]), i)


@dataclass(frozen=True)
class SelectRule:
    """Which rows to keep and by what. Exactly one of top_k / top_fraction / threshold is set."""

    top_k: int | None = None
    top_fraction: float | None = None
    threshold: float | None = None
    score_field: str = "score"
    alpha: float = 1.0
    group_key: str = "problem"
    contiguous_groups: bool = False

    def __post_init__(self):
        given = [m for m, v in zip(MODES, (self.top_k, self.top_fraction, self.threshold)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of --top-k, --top-fraction, --threshold; got {len(given)}"
                             + (f" ({', '.join(given)})" if given else ""))
        if self.score_field not in SCORE_FIELDS:
            raise ValueError(f"--score must be one of {SCORE_FIELDS}; got {self.score_field!r}")
        if self.threshold is not None and math.isnan(self.threshold):
            raise ValueError("--threshold must be a number; got nan")
        self.selector()  # checks k and the fraction

    @property
    def mode(self) -> str:
        return next(m for m, v in zip(MODES, (self.top_k, self.top_fraction, self.threshold)) if v is not None)

    @property
    def passes(self) -> int:
        """Passes over the scored rows: two for top-fraction, one otherwise."""
        return 2 if self.top_fraction is not None else 1

    def selector(self) -> Threshold | TopK | TopFraction:
        """A fresh selector for the first pass (for top-fraction, the pass that only collects scores)."""
        if self.top_k is not None:
            return TopK(self.top_k, self.group_key, "problem", self.contiguous_groups)
        if self.top_fraction is not None:
            return TopFraction(self.top_fraction)
        return Threshold(self.threshold)

    def score(self, row: dict, where: str | None = None) -> float:
        return score_of(row, self.score_field, self.alpha, where)
