"""The aggregations: the scorer's scores, and the numpy twin held equal to the torch reference."""

import math

import numpy as np
import pytest
import torch

import edgeprm
from edgeprm.aggregation import AGGREGATIONS, aggregate
from edgeprm.kernels.step_head import aggregate_ref


@pytest.mark.parametrize("aggregation", ["mean", "min", "last", "prod", "reasonflux"])
def test_aggregations(checkpoints, aggregation):
    s = edgeprm.load(checkpoints["value-head"], device="cpu", aggregation=aggregation, alpha=1.5)
    r = s.score("Count 1 2 3.", ["one", "two two", "three three three"])
    x = r.step_rewards
    expected = {"mean": sum(x) / 3, "min": min(x), "last": x[-1], "prod": math.prod(x),
                "reasonflux": sum(x) / 3 + 1.5 * r.trajectory_reward}[aggregation]
    assert r.score == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_numpy_aggregation_is_aggregate_ref(aggregation):
    rng = np.random.default_rng(0)
    counts = [3, 0, 1, 7, 2]
    flat = rng.random(sum(counts)).astype(np.float32)
    finals = rng.random(len(counts)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    want = aggregate_ref(torch.from_numpy(flat), torch.from_numpy(offsets), torch.from_numpy(finals), aggregation,
                         1.5).numpy()
    got = aggregate([flat[a:b] for a, b in zip(offsets, offsets[1:])], finals, aggregation, 1.5)
    np.testing.assert_allclose(np.array(got, dtype=np.float32), want, rtol=1e-6, atol=1e-7, equal_nan=True)
