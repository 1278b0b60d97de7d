"""Fused step head: gather the step rows, apply a PRM reward head, normalise, aggregate per trajectory.

What it computes, for trajectory b with steps s in [offsets[b], offsets[b+1]):

    x_s      = hidden[b, positions[s]]                          (padded [B, T, H] input)
             = hidden[seq_offsets[b] + positions[s]]            (packed [N, H] input)
    z_s      = relu(x_s @ w1.T + b1)   if the head has a first layer, else x_s
    l_s      = z_s @ w2.T + b2                                   C = w2.shape[0] logits, C in {1, 2}
    reward_s = sigmoid(l_s[0]) if C == 1 else softmax(l_s)[1]

The same head is applied at `final_positions[b]` to give the trajectory reward (when no final positions are
given, the trajectory reward is the last step's reward). The per-trajectory score aggregates the step rewards:
`mean`, `min`, `last`, `prod`, or `reasonflux` = mean(step rewards) + alpha * trajectory reward.
A trajectory with 0 steps gets score NaN (and trajectory reward NaN unless a final position is given).

The three PRM families map onto one head:
- step-classifier: w1/b1 = score.0, w2/b2 = score.2 (C = 2);
- value-head:      w2/b2 = reward_head (C = 1);
- token-prob:      w2 = lm_head rows [bad, good] (C = 2), no bias.

`step_head_ref` is the pure-PyTorch reference (the CPU path and the tests' baseline).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import torch


class Aggregation(str, enum.Enum):
    MEAN = "mean"
    MIN = "min"
    LAST = "last"
    PROD = "prod"
    REASONFLUX = "reasonflux"


AGGREGATIONS = tuple(a.value for a in Aggregation)


@dataclass(frozen=True)
class StepHeadWeights:
    """A PRM reward head: optional Linear(H, H) + ReLU, then Linear(H, C), C in {1, 2}.

    Shapes follow `torch.nn.Linear`: w1 [H, H], b1 [H], w2 [C, H], b2 [C]. Biases may be None.
    """

    w2: torch.Tensor
    b2: torch.Tensor | None = None
    w1: torch.Tensor | None = None
    b1: torch.Tensor | None = None

    def __post_init__(self):
        if self.w2.dim() != 2 or self.w2.shape[0] not in (1, 2):
            raise ValueError(f"w2 must be [C, H] with C in (1, 2); got {tuple(self.w2.shape)}")
        h = self.w2.shape[1]
        if self.b2 is not None and tuple(self.b2.shape) != (self.w2.shape[0],):
            raise ValueError(f"b2 must be [{self.w2.shape[0]}]; got {tuple(self.b2.shape)}")
        if self.w1 is not None and tuple(self.w1.shape) != (h, h):
            raise ValueError(f"w1 must be [{h}, {h}] to feed w2 [C, {h}]; got {tuple(self.w1.shape)}")
        if self.b1 is not None and (self.w1 is None or tuple(self.b1.shape) != (h,)):
            raise ValueError(f"b1 must be [{h}] and needs w1; got {tuple(self.b1.shape)}")

    @property
    def hidden_size(self) -> int:
        return self.w2.shape[1]

    @property
    def num_classes(self) -> int:
        return self.w2.shape[0]

    def to(self, device=None, dtype=None) -> StepHeadWeights:
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return StepHeadWeights(mv(self.w2), mv(self.b2), mv(self.w1), mv(self.b1))


def _gather_rows(hidden, positions, offsets, seq_offsets):
    """Rows of `hidden` at the flat step positions -> [S_total, H], and each step's trajectory index."""
    counts = (offsets[1:] - offsets[:-1]).long()
    traj = torch.repeat_interleave(torch.arange(counts.numel(), device=hidden.device), counts)
    pos = positions.long()
    if seq_offsets is None:
        return hidden[traj, pos], traj
    return hidden[seq_offsets.long()[traj] + pos], traj


def head_rewards_ref(x: torch.Tensor, head: StepHeadWeights) -> torch.Tensor:
    """Head on rows x [N, H] -> rewards [N] in fp32 (fp32 accumulation whatever the input dtype)."""
    x = x.float()
    if head.w1 is not None:
        x = torch.nn.functional.linear(x, head.w1.float(), None if head.b1 is None else head.b1.float())
        x = torch.relu(x)
    logits = torch.nn.functional.linear(x, head.w2.float(), None if head.b2 is None else head.b2.float())
    if head.num_classes == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=-1)[:, 1]


def aggregate_ref(step_rewards, offsets, final_rewards, aggregation: str, alpha: float) -> torch.Tensor:
    """Per-trajectory score [B] from flat step rewards [S_total] (fp32). Empty trajectories give NaN."""
    agg = Aggregation(aggregation)
    b = offsets.numel() - 1
    out = torch.full((b,), float("nan"), dtype=torch.float32, device=step_rewards.device)
    for i in range(b):
        r = step_rewards[int(offsets[i]) : int(offsets[i + 1])]
        if r.numel() == 0:
            continue
        if agg is Aggregation.MEAN:
            out[i] = r.mean()
        elif agg is Aggregation.MIN:
            out[i] = r.min()
        elif agg is Aggregation.LAST:
            out[i] = r[-1]
        elif agg is Aggregation.PROD:
            out[i] = r.prod()
        else:
            out[i] = r.mean() + alpha * final_rewards[i]
    return out


def check_inputs(hidden, positions, offsets, head, aggregation, final_positions=None, seq_offsets=None, lengths=None):
    """Validate shapes, dtypes and ranges before any work; raises ValueError naming what is wrong."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}; got {aggregation!r}")
    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must be padded [B, T, H] or packed [N, H]; got shape {tuple(hidden.shape)}")
    if hidden.shape[-1] != head.hidden_size:
        raise ValueError(f"hidden size {hidden.shape[-1]} does not match the head's {head.hidden_size}")
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"offsets must be 1-D [B + 1]; got shape {tuple(offsets.shape)}")
    if positions.dim() != 1:
        raise ValueError(f"positions must be flat 1-D [S_total]; got shape {tuple(positions.shape)}")
    for name, t in (("positions", positions), ("offsets", offsets), ("final_positions", final_positions),
                    ("seq_offsets", seq_offsets)):
        if t is not None and t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be int32 or int64; got {t.dtype}")
    b = offsets.numel() - 1
    if int(offsets[0]) != 0 or int(offsets[-1]) != positions.numel() or bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"offsets must rise from 0 to len(positions)={positions.numel()}; got {offsets.tolist()}")
    if hidden.dim() == 3:
        if seq_offsets is not None:
            raise ValueError("seq_offsets is only for packed [N, H] hidden states")
        if hidden.shape[0] != b:
            raise ValueError(f"hidden has {hidden.shape[0]} rows but offsets describe {b} trajectories")
        limit = torch.full((b,), hidden.shape[1], dtype=torch.int64, device=offsets.device)
    else:
        if seq_offsets is None or seq_offsets.numel() != b + 1:
            raise ValueError(f"packed hidden [N, H] needs seq_offsets [B + 1] = [{b + 1}]")
        if int(seq_offsets[0]) != 0 or int(seq_offsets[-1]) != hidden.shape[0]:
            raise ValueError(f"seq_offsets must rise from 0 to N={hidden.shape[0]}; got {seq_offsets.tolist()}")
        limit = (seq_offsets[1:] - seq_offsets[:-1]).long()
    if lengths is not None:
        limit = torch.minimum(limit, lengths.long().to(limit.device))
    counts = (offsets[1:] - offsets[:-1]).long()
    per_step_limit = torch.repeat_interleave(limit, counts.to(limit.device))
    bad = (positions.long() < 0) | (positions.long() >= per_step_limit)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"step position {int(positions[i])} (step {i}) is outside its sequence of "
                         f"length {int(per_step_limit[i])}")
    if final_positions is not None:
        if final_positions.shape != (b,):
            raise ValueError(f"final_positions must be [B] = [{b}]; got {tuple(final_positions.shape)}")
        badf = (final_positions.long() < 0) | (final_positions.long() >= limit)
        if bool(badf.any()):
            i = int(badf.nonzero()[0])
            raise ValueError(f"final position {int(final_positions[i])} of trajectory {i} is outside its "
                             f"sequence of length {int(limit[i])}")


def step_head_ref(hidden, positions, offsets, head: StepHeadWeights, aggregation: str = "mean", alpha: float = 1.0,
                  final_positions=None, seq_offsets=None):
    """Reference fused step head.

    hidden [B, T, H] (or packed [N, H] with seq_offsets [B + 1]), any float dtype; positions [S_total] int;
    offsets [B + 1] int; final_positions [B] int or None.
    Returns (step_rewards [S_total], trajectory_rewards [B], scores [B]), all fp32.
    """
    check_inputs(hidden, positions, offsets, head, aggregation, final_positions, seq_offsets)
    rows, _ = _gather_rows(hidden, positions, offsets, seq_offsets)
    step_rewards = head_rewards_ref(rows, head)
    b = offsets.numel() - 1
    if final_positions is not None:
        ar = torch.arange(b, device=hidden.device)
        idx = final_positions.long()
        frows = hidden[ar, idx] if seq_offsets is None else hidden[seq_offsets.long()[:-1] + idx]
        final_rewards = head_rewards_ref(frows, head)
    else:
        final_rewards = torch.full((b,), float("nan"), dtype=torch.float32, device=hidden.device)
        has = offsets[1:] > offsets[:-1]
        final_rewards[has] = step_rewards[(offsets[1:][has] - 1).long()]
    scores = aggregate_ref(step_rewards, offsets, final_rewards, aggregation, alpha)
    return step_rewards, final_rewards, scores


KERNEL_ENV = "EDGEPRM_KERNEL"


def select_impl(device: torch.device) -> str:
    """'triton' on CUDA, 'ref' elsewhere; the EDGEPRM_KERNEL environment variable (triton|ref) overrides."""
    choice = os.environ.get(KERNEL_ENV, "").strip().lower()
    if choice not in ("", "triton", "ref"):
        raise ValueError(f"{KERNEL_ENV} must be 'triton' or 'ref'; got {choice!r}")
    if choice:
        return choice
    return "triton" if device.type == "cuda" else "ref"


def step_head(hidden, positions, offsets, head: StepHeadWeights, aggregation: str = "mean", alpha: float = 1.0,
              final_positions=None, seq_offsets=None):
    """Dispatching step head: the Triton kernel on CUDA, the reference elsewhere (see `select_impl`)."""
    if select_impl(hidden.device) == "triton":
        return step_head_triton(hidden, positions, offsets, head, aggregation, alpha, final_positions, seq_offsets)
    return step_head_ref(hidden, positions, offsets, head, aggregation, alpha, final_positions, seq_offsets)
