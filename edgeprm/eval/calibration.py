"""How well step rewards read as probabilities: expected calibration error (ECE) against step labels.

A step reward is the PRM's probability that the step is correct. On data labelled with the first wrong step (as
ProcessBench is), a step's label is 1 before the first error, 0 at it, and unknown after it (those steps are left
out: a step after an error may be locally right or wrong). ECE uses `BINS` equal-width bins over [0, 1]:
sum over bins of (steps in bin / steps) * |fraction correct - mean reward|; 0 is perfectly calibrated. AUROC says
how well `1 - reward` ranks the wrong steps above the right ones, whatever the calibration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeprm.stats import auroc

BINS = 10


def step_labels(first_error: int, n_steps: int) -> list[int | None]:
    """Per-step correctness from a first-error label (-1 = all correct): 1 before it, 0 at it, None after."""
    if not -1 <= first_error < n_steps:
        raise ValueError(f"first_error {first_error} is outside {n_steps} steps")
    if first_error == -1:
        return [1] * n_steps
    return [1] * first_error + [0] + [None] * (n_steps - first_error - 1)


@dataclass(frozen=True)
class Calibration:
    """ECE and AUROC of step rewards over the labelled steps; `bins` holds (low, high, steps, mean reward,
    fraction correct) of each non-empty bin."""

    name: str
    n_steps: int
    n_wrong: int
    ece: float | None
    auroc: float | None
    bins: tuple[tuple[float, float, int, float, float], ...]


def calibration(rewards: Sequence[float], labels: Sequence[int], name: str = "", bins: int = BINS) -> Calibration:
    """ECE and AUROC of `rewards` (probabilities in [0, 1], float [N]) for `labels` (1 = correct step, int [N])."""
    r = np.asarray(rewards, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if r.shape != y.shape or r.ndim != 1:
        raise ValueError(f"rewards and labels must be 1-D of the same length; got {r.shape} and {y.shape}")
    if len(r) and (np.isnan(r).any() or r.min() < 0 or r.max() > 1):
        raise ValueError("rewards must be probabilities in [0, 1]; got values outside (or NaN)")
    if len(r) == 0:
        return Calibration(name, 0, 0, None, None, ())
    idx = np.minimum((r * bins).astype(int), bins - 1)  # a reward of exactly 1.0 goes in the top bin
    ece, table = 0.0, []
    for b in range(bins):
        m = idx == b
        if m.any():
            conf, acc = float(r[m].mean()), float(y[m].mean())
            ece += m.sum() / len(r) * abs(acc - conf)
            table.append((b / bins, (b + 1) / bins, int(m.sum()), conf, acc))
    a = auroc(1.0 - r, (y == 0).astype(int))
    return Calibration(name, len(r), int((y == 0).sum()), float(ece), None if math.isnan(a) else a, tuple(table))


def labelled_steps(first_errors: Sequence[int], step_rewards: Sequence[Sequence[float | None]]
                   ) -> tuple[list[float], list[int]]:
    """(rewards, labels) of every labelled, scored step: steps after a first error and steps cut by truncation
    (None) are left out."""
    rewards, labels = [], []
    for fe, rw in zip(first_errors, step_rewards):
        for r, y in zip(rw, step_labels(fe, len(rw))):
            if r is not None and y is not None:
                rewards.append(float(r))
                labels.append(y)
    return rewards, labels
