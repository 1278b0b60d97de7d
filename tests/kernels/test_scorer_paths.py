"""The scorer's rewards do not depend on which step-head implementation computes them."""

import random

import pytest
import torch

from edgeprm.kernels.step_head import KERNEL_ENV, select_impl
from edgeprm.trajectory import Trajectory

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_scorer_rewards_match_across_kernel_paths(scorers, family, monkeypatch):
    rng = random.Random()
    items = [Trajectory(f"Problem {i}: what is {rng.randint(1, 99)} + {rng.randint(1, 99)}?",
                        [f"step {j}: {rng.randint(1, 999)} apples." for j in range(rng.randint(1, 5))],
                        "The answer is 7." if i % 2 else None, id=str(i)) for i in range(4)]
    s = scorers[family]
    monkeypatch.setenv(KERNEL_ENV, "ref")
    assert select_impl(torch.device("cpu")) == "ref"
    ref = s.score_batch(items)
    monkeypatch.setenv(KERNEL_ENV, "triton")  # the Triton kernel, in the interpreter on CPU
    assert select_impl(torch.device("cpu")) == "triton"
    tri = s.score_batch(items)
    for a, b in zip(ref, tri):
        assert len(a.step_rewards) == len(b.step_rewards)
        torch.testing.assert_close(torch.tensor([*a.step_rewards, a.trajectory_reward, a.score]),
                                   torch.tensor([*b.step_rewards, b.trajectory_reward, b.score]), atol=1e-5, rtol=0)
