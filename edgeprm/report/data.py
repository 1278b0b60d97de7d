"""What a report shows, read from a scored file in one streaming pass (`collect`), as plain numbers.

Per source (a field such as `source` or `generator`, or a part of one picked by a regular expression): the scores,
for the per-source histograms; a fixed-size random sample of trajectories (reservoir sampling) for the step-reward
curves; where each trajectory's first doubted step is (the first step rewarded below `doubt`); and, when rows
carry `is_correct`, Best-of-N accuracy against N and a calibration table. Memory: a few numbers per row (scores,
first-doubt positions, labels), never the rows themselves.

Best-of-N accuracy at N is exact, not sampled: within a group of m candidates ranked best first (ties to the
earlier row, as `edgeprm.stats.best_index` picks), the candidate ranked j-th is the PRM's pick in a random N-subset
exactly when it is in the subset and the j - 1 better ones are not, with probability C(m - j, N - 1) / C(m, N).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edgeprm.rows import group_label
from edgeprm.select.policy import rank_key, score_of

SOURCE_FIELDS = ("source", "generator", "model")  # looked for, in this order, when no --by is given
ALL = "all rows"


@dataclass(frozen=True)
class ReportOptions:
    """How rows are grouped and what counts as a doubted step."""

    by: str | None = None            # source field; None: the first of SOURCE_FIELDS a row has
    by_pattern: str | None = None    # a regex whose first group (or whole match) of the field is the source
    group_key: str = "group"         # Best-of-N groups: this field, else the problem text
    score_field: str = "score"
    alpha: float = 1.0
    doubt: float = 0.5
    samples: int = 24
    seed: int = 0
    bins: int = 10

    def __post_init__(self):
        if self.by_pattern is not None:
            try:
                re.compile(self.by_pattern)
            except re.error as e:
                raise ValueError(f"--by-pattern is not a valid regular expression: {e}") from None
        if self.samples < 0 or self.bins < 1:
            raise ValueError(f"--samples must be >= 0 and --bins >= 1; got {self.samples} and {self.bins}")


@dataclass(frozen=True)
class SourceStats:
    name: str
    rows: int
    scored: int            # rows with a finite score
    mean: float
    median: float
    correct: float | None  # fraction with is_correct true, when rows carry it


@dataclass(frozen=True)
class ReportData:
    """Everything the figures and tables are drawn from."""

    path: str
    rows: int
    options: ReportOptions
    sources: list[SourceStats]
    scores: dict[str, np.ndarray]                # per source: finite scores, float64
    samples: list[dict]                          # {"id", "source", "step_rewards", "is_correct"}
    first_doubt: dict[str, list[int | None]]     # per label ("correct"/"incorrect"/ALL): 1-based step or None
    best_of_n: list[dict] = field(default_factory=list)   # {"n", "groups", "prm", "random", "oracle"}
    calibration: list[dict] = field(default_factory=list)  # {"lo", "hi", "count", "mean_score", "correct"}
    ece: float | None = None
    has_labels: bool = False


def source_of(row: dict, opts: ReportOptions) -> str:
    by = opts.by or next((f for f in SOURCE_FIELDS if row.get(f) is not None), None)
    if by is None:
        return ALL
    value = row.get(by)
    if value is None:
        return f"(no {by})"
    value = str(value)
    if opts.by_pattern is not None:
        m = re.search(opts.by_pattern, value)
        if m is None:
            return f"(no match in {by})"
        value = m.group(1) if m.groups() else m.group(0)
    return value


def first_doubted(step_rewards, doubt: float) -> int | None:
    """1-based index of the first step rewarded below `doubt` (cut steps skipped), None if none is."""
    for i, r in enumerate(step_rewards or [], 1):
        if r is not None and r < doubt:
            return i
    return None


def collect(rows: Iterable[tuple[str, dict]], opts: ReportOptions, path: str = "") -> ReportData:
    """Read (where, row) pairs (`edgeprm.select.io.iter_rows`) once and build the report's numbers."""
    rng = random.Random(opts.seed)
    per_source: dict[str, list[float]] = {}
    counts, correct, labelled = Counter(), Counter(), Counter()
    doubts: dict[str, list[int | None]] = {}
    reservoir: list[dict] = []
    groups: dict[str, list[tuple[tuple[float, int], bool]]] = {}
    pairs: list[tuple[float, bool]] = []
    n = 0
    for index, (where, row) in enumerate(rows):
        n += 1
        src = source_of(row, opts)
        s = score_of(row, opts.score_field, opts.alpha, where)
        counts[src] += 1
        if math.isfinite(s):
            per_source.setdefault(src, []).append(s)
        label = row.get("is_correct")
        if label is not None:
            label = bool(label)
            labelled[src] += 1
            correct[src] += label
            groups.setdefault(group_label(row, opts.group_key), []).append((rank_key(s, index), label))
            if math.isfinite(s):
                pairs.append((s, label))
        kind = ALL if label is None else ("correct" if label else "incorrect")
        doubts.setdefault(kind, []).append(first_doubted(row.get("step_rewards"), opts.doubt))
        sample = {"id": row.get("id"), "source": src, "step_rewards": row.get("step_rewards") or [],
                  "is_correct": label}
        if len(reservoir) < opts.samples:  # reservoir sampling: every row kept with probability samples / n
            reservoir.append(sample)
        elif opts.samples:
            j = rng.randrange(n)
            if j < opts.samples:
                reservoir[j] = sample
    sources = []
    for name, c in counts.most_common():
        sc = np.asarray(per_source.get(name, []), dtype=np.float64)
        sources.append(SourceStats(name, c, len(sc), float(sc.mean()) if len(sc) else math.nan,
                                   float(np.median(sc)) if len(sc) else math.nan,
                                   correct[name] / labelled[name] if labelled[name] else None))
    calib, ece = calibration_table(pairs, opts.bins)
    return ReportData(path=path, rows=n, options=opts, sources=sources,
                      scores={k: np.asarray(v, dtype=np.float64) for k, v in per_source.items()},
                      samples=reservoir, first_doubt=doubts, best_of_n=best_of_n_curve(list(groups.values())),
                      calibration=calib, ece=ece, has_labels=bool(labelled))


def best_of_n_curve(groups: list[list[tuple[tuple[float, int], bool]]]) -> list[dict]:
    """Expected accuracy of the PRM's pick, a random pick and an oracle over random N-subsets of each group, for
    N = 1 .. the largest group (a group counts for the N it can supply). Exact (see the module docstring)."""
    if not groups:
        return []
    out = []
    for n in range(1, max(len(g) for g in groups) + 1):
        prm = rnd = oracle = 0.0
        used = 0
        for g in groups:
            m = len(g)
            if m < n:
                continue
            used += 1
            labels = [c for _, c in sorted(g, key=lambda x: x[0], reverse=True)]  # best first
            total = math.comb(m, n)
            prm += sum(math.comb(m - j, n - 1) for j, c in enumerate(labels, 1) if c) / total
            k = sum(labels)
            rnd += k / m
            oracle += 1.0 - math.comb(m - k, n) / total
        out.append({"n": n, "groups": used, "prm": prm / used, "random": rnd / used, "oracle": oracle / used})
    return out


def calibration_table(pairs: list[tuple[float, bool]], bins: int) -> tuple[list[dict], float | None]:
    """Equal-width bins of the score over [0, 1] (or over the scores' range when they leave it, as reasonflux
    scores do): count, mean score, fraction correct; and the expected calibration error when scores are in [0, 1].

    Written with numpy: the one-line binning of a calibration curve needs no extra dependency."""
    if not pairs:
        return [], None
    s = np.array([p[0] for p in pairs], dtype=np.float64)
    y = np.array([p[1] for p in pairs], dtype=np.float64)
    unit = bool(s.min() >= 0.0 and s.max() <= 1.0)
    lo, hi = (0.0, 1.0) if unit else (float(s.min()), float(s.max()))
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        c = int(sel.sum())
        if c:
            table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": c,
                          "mean_score": float(s[sel].mean()), "correct": float(y[sel].mean())})
            ece += c / len(s) * abs(float(s[sel].mean()) - float(y[sel].mean()))
    return table, (ece if unit else None)
