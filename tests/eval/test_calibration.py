"""Calibration of step rewards: ECE on hand-made bins, step labels from a first-error label, AUROC."""

import numpy as np
import pytest

from edgeprm.eval.calibration import calibration, labelled_steps, step_labels
from edgeprm.stats import auroc


def test_ece_of_hand_made_bins():
    c = calibration([0.95] * 10, [1] * 9 + [0])  # one bin: mean reward 0.95, 90% correct
    assert c.ece == pytest.approx(0.05) and c.n_steps == 10 and c.n_wrong == 1
    assert c.bins == ((0.9, 1.0, 10, pytest.approx(0.95), pytest.approx(0.9)),)
    # Two bins, each perfectly calibrated: ECE 0; a reward of exactly 1.0 falls in the top bin.
    c = calibration([0.25, 0.25, 0.25, 0.25, 1.0, 1.0], [1, 0, 0, 0, 1, 1])
    assert c.ece == pytest.approx(0.0) and [b[2] for b in c.bins] == [4, 2]
    # Weighted by bin size: |0.2 - 0.0| * 3/4 + |0.8 - 1.0| * 1/4.
    assert calibration([0.2, 0.2, 0.2, 0.8], [0, 0, 0, 1]).ece == pytest.approx(0.2)


def test_auroc_ranks_wrong_steps_by_low_reward():
    rng = np.random.default_rng()
    r, y = rng.random(200), (rng.random(200) < 0.7).astype(int)
    assert calibration(r, y).auroc == pytest.approx(auroc(1 - r, 1 - y))
    assert calibration([0.9, 0.8, 0.1], [1, 1, 0]).auroc == 1.0
    assert calibration([0.9, 0.8], [1, 1]).auroc is None  # no wrong step: undefined, not 0.5


def test_step_labels_and_labelled_steps():
    assert step_labels(-1, 3) == [1, 1, 1] and step_labels(1, 4) == [1, 0, None, None]
    rewards, labels = labelled_steps([1, -1, 2], [[0.9, 0.2, 0.7], [0.8, None], [0.6, 0.5, 0.4]])
    assert rewards == [0.9, 0.2, 0.8, 0.6, 0.5, 0.4] and labels == [1, 0, 1, 1, 1, 0]  # after-error / cut left out
    with pytest.raises(ValueError, match="first_error 3 is outside 3 steps"):
        step_labels(3, 3)


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        calibration([0.5], [1, 0])
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        calibration([1.5], [1])
    assert calibration([], []).ece is None
