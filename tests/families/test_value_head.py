"""The value-head family: weights-only head files, step values ending at the reference score."""


import pytest
import torch

import edgeprm

from ..helpers import copy


def test_pickled_reward_head_is_refused(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "pickled")
    torch.save(torch.nn.Linear(40, 1), d / "reward_head.pt")  # a whole module: needs unpickling code
    with pytest.raises(ValueError, match="could not be read as a weights-only state dict"):
        edgeprm.load(d)


def test_value_head_step_rewards_end_at_the_reference_score(scorers):
    r = scorers["value-head"].score("What is 3 * 4?", ["3 * 4 = 12.", "So the answer is 12."])
    assert r.step_rewards[-1] == pytest.approx(r.trajectory_reward, abs=1e-6)
