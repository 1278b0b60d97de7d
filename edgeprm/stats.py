"""Rank statistics and picks shared by the scorers, the fidelity harness and the evaluators (numpy only).

- `best_index`: the index of the highest score, first on ties, NaN lowest (how every Best-of-N pick is made);
- `rankdata`: 1-based ranks with ties given the mean of their ranks (midranks, scipy's 'average');
- `spearman`, `kendall_tau_b`: rank correlations with ties handled as scipy does (tests hold them equal);
- `auroc`: area under the ROC curve from midranks (ties count one half).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def best_index(scores: Sequence[float | None]) -> int:
    """Index of the highest score; the first one on ties; NaN and None rank lowest. Needs at least one score."""
    if len(scores) == 0:
        raise ValueError("best_index needs at least one score; got 0")
    keys = [-math.inf if s is None or math.isnan(s) else s for s in scores]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))


def rankdata(a) -> np.ndarray:
    """1-based ranks with ties given the mean of their ranks (scipy.stats.rankdata's 'average')."""
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(np.r_[new, True])
    avg = (starts[:-1] + starts[1:] - 1) / 2.0 + 1.0
    ranks = np.empty(len(a))
    ranks[order] = avg[np.cumsum(new) - 1]
    return ranks


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length; got {x.shape} and {y.shape}")
    return x, y


def spearman(x, y) -> float:
    """Spearman's rho (Pearson correlation of mid-ranks); NaN when either input is constant or has < 2 values."""
    x, y = _check_pair(x, y)
    if len(x) < 2:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / den if den > 0 else math.nan


def _tie_pairs(sorted_values: np.ndarray) -> int:
    if len(sorted_values) == 0:
        return 0
    _, counts = np.unique(sorted_values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau's default), O(n log n); NaN when either input is constant."""
    x, y = _check_pair(x, y)
    n = len(x)
    if n < 2:
        return math.nan
    order = np.lexsort((y, x))  # by x, ties in x by y: pairs tied in x are never counted as discordant
    xs, ys = x[order], y[order]
    n0 = n * (n - 1) // 2
    n1 = _tie_pairs(xs)
    n2 = _tie_pairs(np.sort(ys))
    joint = np.r_[True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1]), True]
    runs = np.diff(np.flatnonzero(joint))
    n3 = int((runs * (runs - 1) // 2).sum())
    # Discordant pairs = inversions of ys (strictly greater earlier values), counted with a Fenwick tree over ranks.
    _, dense = np.unique(ys, return_inverse=True)
    tree = [0] * (int(dense.max()) + 2)
    discordant = 0
    for i, r in enumerate(dense.tolist(), 1):
        k, le = r + 1, 0
        while k > 0:  # how many earlier values are <= this one
            le += tree[k]
            k -= k & -k
        discordant += (i - 1) - le
        k = r + 1
        while k < len(tree):
            tree[k] += 1
            k += k & -k
    den = math.sqrt((n0 - n1) * (n0 - n2))
    return (n0 - n1 - n2 + n3 - 2 * discordant) / den if den > 0 else math.nan


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of `scores` for positives (`labels` == 1); ties count one half (midranks).

    Equals P(score of a random positive > score of a random negative) + 0.5 * P(equal). NaN without both classes.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length; got {s.shape} and {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
