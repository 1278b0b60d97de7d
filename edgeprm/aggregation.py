"""How a trajectory's step rewards become one score: the aggregations, and their numpy form (torch-free).

`mean`, `min`, `last`, `prod`, or `reasonflux` = mean(step rewards) + alpha * trajectory reward (the ReasonFlux
paper's combination; alpha = 1.0 by default). The torch twin is `edgeprm.kernels.step_head.aggregate_ref` (the fused
step head computes it on GPU); a test holds the two equal.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import numpy as np


class Aggregation(str, enum.Enum):
    MEAN = "mean"
    MIN = "min"
    LAST = "last"
    PROD = "prod"
    REASONFLUX = "reasonflux"


AGGREGATIONS = tuple(a.value for a in Aggregation)


def check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}; got {aggregation!r}")
    return aggregation


def aggregate(step_rewards: Sequence[Sequence[float]], final_rewards: Sequence[float], aggregation: str,
              alpha: float) -> list[float]:
    """Per-trajectory scores from each trajectory's step rewards and its final reward, in fp32.

    A trajectory with no (kept) steps scores NaN.
    """
    agg = Aggregation(aggregation)
    out = []
    for r, final in zip(step_rewards, final_rewards):
        r = np.asarray(r, dtype=np.float32)
        if r.size == 0:
            out.append(math.nan)
        elif agg is Aggregation.MEAN:
            out.append(float(r.mean(dtype=np.float32)))
        elif agg is Aggregation.MIN:
            out.append(float(r.min()))
        elif agg is Aggregation.LAST:
            out.append(float(r[-1]))
        elif agg is Aggregation.PROD:
            out.append(float(r.prod(dtype=np.float32)))
        else:
            out.append(float(r.mean(dtype=np.float32) + np.float32(alpha) * np.float32(final)))
    return out
