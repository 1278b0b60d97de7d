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

`step_head_ref` is the pure-PyTorch reference (the CPU path and the tests' baseline). `step_head_triton` is the
fused Triton version: it gathers the rows through `hidden`'s strides inside the kernel, so neither a [B, T, .] nor an
[S, H] intermediate is materialised; its jit kernels live in `_step_head_triton.py` (read that header for the
design) and this file holds its launcher, which validates everything before launching.
`step_head` dispatches between the two (see `select_impl`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from edgeprm.aggregation import AGGREGATIONS, Aggregation  # one list of choices for both backends

try:
    import triton
except ImportError:  # the package works without triton: the reference runs everywhere
    triton = None


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


def head_logits_ref(x: torch.Tensor, head: StepHeadWeights) -> torch.Tensor:
    """Head logits of rows x [..., H] -> [..., C] in fp32 (fp32 accumulation whatever the input dtype).

    Differentiable: the demo PRM's training computes its loss on these logits."""
    x = x.float()
    if head.w1 is not None:
        x = torch.nn.functional.linear(x, head.w1.float(), None if head.b1 is None else head.b1.float())
        x = torch.relu(x)
    return torch.nn.functional.linear(x, head.w2.float(), None if head.b2 is None else head.b2.float())


def normalise_ref(logits: torch.Tensor) -> torch.Tensor:
    """Logits [..., C] -> rewards [...]: sigmoid for C = 1, the class-1 softmax probability for C = 2."""
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[..., 0])
    return torch.softmax(logits, dim=-1)[..., 1]


def head_rewards_ref(x: torch.Tensor, head: StepHeadWeights) -> torch.Tensor:
    """Head on rows x [..., H] -> rewards [...] in fp32: the reward math of every family (the ONNX graph's too)."""
    return normalise_ref(head_logits_ref(x, head))


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


# ----------------------------------------------------------------------------------------------- Triton launcher

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_runnable(device: torch.device, interpreted: bool) -> None:
    """Raise if kernels built with `interpreted` (TRITON_INTERPRET) cannot run on tensors on `device`."""
    if device.type == "cpu" and not interpreted:
        raise RuntimeError(
            "the Triton step head got CPU tensors but its kernels were built for a GPU. To run them on CPU in the "
            "Triton interpreter, set TRITON_INTERPRET=1 before edgeprm's Triton kernels are first used (e.g. export it "
            "in the shell); otherwise use the reference (EDGEPRM_KERNEL=ref, or unset it to get the default on CPU)")
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"the Triton step head runs on CUDA (or CPU in the interpreter); got {device.type} tensors. "
                           f"Use step_head_ref or EDGEPRM_KERNEL=ref")


def _kernels(device: torch.device):
    if triton is None:
        raise RuntimeError("the Triton step head needs triton (`pip install 'edgeprm[triton]'`, Linux); without it "
                           f"use the reference: step_head_ref, or {KERNEL_ENV}=ref")
    from edgeprm.kernels import _step_head_triton as tk  # deferred: decorating the kernels reads TRITON_INTERPRET

    check_runnable(device, tk.INTERPRET)
    return tk


def _check_launch(hidden, positions, offsets, head, final_positions, seq_offsets, out, interpreted):
    """Device, dtype and output-buffer checks the reference does not need (check_inputs covers shapes and ranges)."""
    dev = hidden.device
    tensors = {"positions": positions, "offsets": offsets, "final_positions": final_positions,
               "seq_offsets": seq_offsets, "head.w1": head.w1, "head.b1": head.b1, "head.w2": head.w2,
               "head.b2": head.b2}
    for name, t in tensors.items():
        if t is not None and t.device != dev:
            raise ValueError(f"{name} is on {t.device} but hidden is on {dev}; move it with .to(hidden.device)")
    for name, t in {"hidden": hidden, **{k: v for k, v in tensors.items() if k.startswith("head.")}}.items():
        if t is not None and t.dtype not in _KERNEL_DTYPES:
            raise ValueError(f"{name} must be one of {_KERNEL_DTYPES} for the Triton step head; got {t.dtype}")
        if t is not None and interpreted and t.dtype == torch.bfloat16:
            raise ValueError(f"{name} is bfloat16, which the Triton interpreter computes wrongly; use float16 or "
                             f"float32 under TRITON_INTERPRET=1 (bfloat16 runs on a GPU)")
    if hidden.numel() and min(hidden.stride()) < 0:  # cannot happen in torch today; the kernel assumes it
        raise ValueError(f"hidden must have non-negative strides; got {hidden.stride()}")
    b = offsets.numel() - 1
    if out is not None:
        want = ((positions.numel(),), (b,), (b,))
        if len(out) != 3:
            raise ValueError(f"out must be (step_rewards, trajectory_rewards, scores); got {len(out)} tensors")
        for name, t, shape in zip(("step_rewards", "trajectory_rewards", "scores"), out, want):
            if tuple(t.shape) != shape or t.dtype != torch.float32 or t.device != dev or not t.is_contiguous():
                raise ValueError(f"out {name} must be a contiguous float32 {list(shape)} tensor on {dev}; got "
                                 f"{t.dtype} {list(t.shape)} on {t.device} (contiguous={t.is_contiguous()})")


def step_head_triton(hidden, positions, offsets, head: StepHeadWeights, aggregation: str = "mean", alpha: float = 1.0,
                     final_positions=None, seq_offsets=None, *, out=None):
    """Fused Triton step head; same inputs and outputs as `step_head_ref`.

    hidden [B, T, H] (any strides) or packed [N, H] with seq_offsets [B + 1]; fp16/bf16/fp32 (bf16 on GPU only).
    Returns (step_rewards [S_total], trajectory_rewards [B], scores [B]), fp32.
    out: optional (step_rewards, trajectory_rewards, scores) fp32 buffers to write into and return; every element
    is written (the tests pass poisoned buffers to prove it).
    On CPU tensors it runs only under the Triton interpreter (TRITON_INTERPRET=1).
    """
    tk = _kernels(hidden.device)
    _check_launch(hidden, positions, offsets, head, final_positions, seq_offsets, out, tk.INTERPRET)
    check_inputs(hidden, positions, offsets, head, aggregation, final_positions, seq_offsets)
    dev, f32, i32 = hidden.device, torch.float32, torch.int32
    b, s, h, c = offsets.numel() - 1, positions.numel(), head.hidden_size, head.num_classes
    if out is None:
        out = (torch.empty(s, dtype=f32, device=dev), torch.empty(b, dtype=f32, device=dev),
               torch.empty(b, dtype=f32, device=dev))
    if b == 0:
        return tuple(out)

    # Rows to score: the S steps, then the B final positions, as (trajectory, position) pairs; int32 is safe
    # because check_inputs bounded every position by its sequence length.
    row_traj = torch.repeat_interleave(torch.arange(b, dtype=i32, device=dev), (offsets[1:] - offsets[:-1]).long(),
                                       output_size=s)
    row_pos = positions.to(i32)
    if final_positions is not None:
        row_traj = torch.cat([row_traj, torch.arange(b, dtype=i32, device=dev)])
        row_pos = torch.cat([row_pos, final_positions.to(i32)])
    r = row_pos.numel()
    packed = hidden.dim() == 2
    stride_b, stride_t = (0, hidden.stride(0)) if packed else (hidden.stride(0), hidden.stride(1))
    seq_off = seq_offsets.to(i32) if packed else row_traj  # never read when not packed
    nslot = triton.cdiv(h, tk.MIN_BLOCK_N) if head.w1 is not None else 1
    partials = torch.zeros((max(r, 1), nslot, c), dtype=f32, device=dev)
    r_bucket = min(max(triton.next_power_of_2(r), 16), 4096)  # autotune key: re-tune per size class, not per call

    if r and head.w1 is not None:
        dot_dtype = torch.promote_types(hidden.dtype, head.w1.dtype)

        def grid(meta):
            return triton.cdiv(r, meta["BLOCK_M"]), triton.cdiv(h, meta["BLOCK_N"])

        tk._classifier_partials_kernel[grid](
            hidden, row_traj, row_pos, seq_off, head.w1, head.w1 if head.b1 is None else head.b1, head.w2, partials,
            r, h, r_bucket, nslot, stride_b, stride_t, hidden.stride(-1), head.w1.stride(0), head.w1.stride(1),
            head.w2.stride(0), head.w2.stride(1),
            C=c, HAS_B1=head.b1 is not None, PACKED=packed, DOT_DTYPE=tk.TL_DTYPES[dot_dtype],
            DOT_PRECISION="ieee" if dot_dtype == f32 else "tf32")
    elif r:
        def grid(meta):
            return (triton.cdiv(r, meta["BLOCK_M"]),)

        tk._linear_partials_kernel[grid](
            hidden, row_traj, row_pos, seq_off, head.w2, partials, r, h, r_bucket,
            stride_b, stride_t, hidden.stride(-1), head.w2.stride(0), head.w2.stride(1), C=c, PACKED=packed)

    tk._finish_kernel[(b,)](
        partials, head.w2 if head.b2 is None else head.b2, offsets.to(i32), out[0], out[1], out[2],
        s, nslot, float(alpha),
        C=c, HAS_B2=head.b2 is not None, HAS_FINAL=final_positions is not None, AGG=Aggregation(aggregation).value,
        NSLOT_P2=triton.next_power_of_2(nslot), BLOCK_S=tk.FINISH_BLOCK_S)
    return tuple(out)


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
