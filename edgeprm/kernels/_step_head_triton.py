"""Triton kernels of the fused step head (the launcher, `step_head_triton`, lives in `step_head.py`).

Two launches per call, over R = S_total step rows plus B final rows when final positions are given:

1. Head logits, written as per-tile partial sums into a zeroed fp32 buffer `partials [R, NSLOT, C]`:
   - `_classifier_partials_kernel` (head with a first layer, the step-classifier family): program (m, n) gathers
     BLOCK_M rows straight from `hidden` by (trajectory, position) and strides, runs the tiled GEMM
     x[BLOCK_M, H] @ w1[BLOCK_N, H].T with `tl.dot` and a masked K loop (H need not be a power of two), adds b1,
     applies ReLU and dots the [BLOCK_M, BLOCK_N] tile with w2's matching columns, giving one partial logit per
     row and class; it stores that into slot n. No [B, T, .] or [R, H] intermediate is ever written.
   - `_linear_partials_kernel` (value-head C = 1 and token-prob C = 2, no first layer): a gathered GEMV,
     NSLOT = 1.
   Slots instead of atomics: every slot has exactly one writer and the sum over slots runs in a fixed order, so
   results are bit-reproducible run to run. NSLOT is sized for the smallest BLOCK_N among the configs; slots a
   larger BLOCK_N leaves unwritten stay zero (the buffer is zeroed, and autotune re-zeroes it between trials).
2. `_finish_kernel`, one program per trajectory: sums the slots, adds b2, normalises (sigmoid for C = 1; the
   2-class softmax's class-1 probability, computed as sigmoid(l1 - l0)), stores the step rewards and reduces them
   to the trajectory reward and the score (mean / min / last / prod / reasonflux).

Accumulation is fp32 throughout. fp32 operands use `input_precision="ieee"` (not TF32), so fp32 results match the
reference to ~1e-6. Tested under TRITON_INTERPRET=1 on CPU (fp32, fp16); every GPU config is compiled for sm_75,
sm_80, sm_86, sm_87, sm_89 and sm_90 without a GPU by `edgeprm.kernels.aot` (tests/kernels/test_aot.py), which
records the configs that spill or overflow shared memory per target; `prune_configs` drops those before autotuning.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch
import triton
import triton.language as tl

# Decided once, when this module's kernels are decorated: @triton.jit builds interpreted functions only if
# TRITON_INTERPRET=1 was set by then. (Older triton has no knobs and reads the environment directly.)
try:
    INTERPRET = bool(triton.knobs.runtime.interpret)
except AttributeError:
    INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def _config(block_m, block_k, warps, stages, block_n=None):
    # tl.dot on a GPU needs every tile dimension >= 16 (the interpreter accepts smaller ones and would hide this).
    tiles = {"BLOCK_M": block_m, "BLOCK_K": block_k} | ({} if block_n is None else {"BLOCK_N": block_n})
    assert block_n is None or min(tiles.values()) >= 16, tiles
    return triton.Config(tiles, num_warps=warps, num_stages=stages)


if INTERPRET:
    # One config only: multi-config autotune needs a driver to time on. Small N/K tiles so the tests cross tile
    # boundaries with small H.
    CLASSIFIER_CONFIGS = [_config(16, 32, 4, 1, block_n=32)]
    LINEAR_CONFIGS = [_config(16, 32, 4, 1)]
else:
    # The classifier GEMM has few rows (R = S + B, tens to hundreds) against an H x H weight: it is bound by reading
    # w1 once per M tile, so small BLOCK_N gives enough programs to fill the SMs (T4: 40, RTX 4090: 128, Orin: 16,
    # H100: 132). Compiled for sm_75 ... sm_90 by `edgeprm.kernels.aot` (registers, spills and shared memory per
    # target in _step_head_targets.json): on sm_75 (T4) with fp16 only the first two tiles fit in registers (212 and
    # 226 per thread, no stack); every larger tile spills there, and `prune_configs` drops those on such a GPU.
    CLASSIFIER_CONFIGS = [
        _config(16, 64, 4, 2, block_n=32),
        _config(32, 32, 4, 2, block_n=64),
        _config(16, 128, 4, 3, block_n=32),
        _config(16, 128, 4, 3, block_n=64),
        _config(32, 64, 4, 3, block_n=64),
        _config(64, 64, 4, 3, block_n=64),
        _config(64, 64, 8, 3, block_n=128),
        _config(128, 64, 8, 4, block_n=128),  # Hopper, many rows (large batches of Best-of-N candidates)
    ]
    # Two fp32 [BLOCK_M, BLOCK_K] accumulators per program: 64 x 128 with 4 warps spills on every target (255
    # registers + stack), so the 64-row tiles use BLOCK_K 64 with 4 warps or 128 with 8.
    LINEAR_CONFIGS = [
        _config(16, 256, 4, 2),
        _config(32, 128, 4, 2),
        _config(64, 64, 4, 2),
        _config(64, 128, 8, 2),
    ]

MIN_BLOCK_N = min(c.kwargs["BLOCK_N"] for c in CLASSIFIER_CONFIGS)
FINISH_BLOCK_S = 16
TARGETS_TABLE = Path(__file__).with_name("_step_head_targets.json")


@functools.cache
def _dropped_on(capability: tuple[int, int]) -> frozenset[str]:
    """'kernel:config' names that spill or overflow shared memory on this compute capability (AOT-compiled)."""
    table = json.loads(TARGETS_TABLE.read_text()).get("dropped", {}) if TARGETS_TABLE.is_file() else {}
    return frozenset(table.get(f"sm_{capability[0]}{capability[1]}", ()))


def prune_configs(kernel: str):
    """An autotune `early_config_prune` dropping the configs recorded as not fitting the current GPU."""

    def prune(configs, named_args, **kwargs):
        if INTERPRET or not torch.cuda.is_available():
            return configs
        from edgeprm.kernels.aot import config_name

        bad = _dropped_on(torch.cuda.get_device_capability())
        kept = [c for c in configs if f"{kernel}:{config_name(c)}" not in bad]
        return kept or configs  # a GPU the table does not know keeps every config

    return {"early_config_prune": prune}


@triton.jit
def _row_offsets(row_traj_ptr, row_pos_ptr, seq_off_ptr, rows, row_mask, stride_b, stride_t, PACKED: tl.constexpr):
    """Element offset of each gathered row's first feature in `hidden` (int64: B*T*H can exceed 2**31)."""
    traj = tl.load(row_traj_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    pos = tl.load(row_pos_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    if PACKED:
        start = tl.load(seq_off_ptr + traj, mask=row_mask, other=0).to(tl.int64)
        off = (start + pos) * stride_t
    else:
        off = traj * stride_b + pos * stride_t
    return off


@triton.autotune(configs=CLASSIFIER_CONFIGS, key=["H", "R_BUCKET"], reset_to_zero=["partial_ptr"],
                 prune_configs_by=prune_configs("classifier_partials"))
@triton.jit
def _classifier_partials_kernel(
    hidden_ptr, row_traj_ptr, row_pos_ptr, seq_off_ptr, w1_ptr, b1_ptr, w2_ptr, partial_ptr,
    R, H, R_BUCKET, NSLOT,
    stride_b, stride_t, stride_h, stride_w1n, stride_w1k, stride_w2c, stride_w2k,
    C: tl.constexpr, HAS_B1: tl.constexpr, PACKED: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < R
    row_off = _row_offsets(row_traj_ptr, row_pos_ptr, seq_off_ptr, rows, row_mask, stride_b, stride_t, PACKED)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < H

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < H
        x = tl.load(hidden_ptr + row_off[:, None] + ks[None, :] * stride_h,
                    mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        # w1 is [H_out, H_in] (nn.Linear); read the [BLOCK_K, BLOCK_N] tile of its transpose through strides.
        w = tl.load(w1_ptr + cols[None, :] * stride_w1n + ks[:, None] * stride_w1k,
                    mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(x.to(DOT_DTYPE), w.to(DOT_DTYPE), acc, input_precision=DOT_PRECISION)

    if HAS_B1:
        acc += tl.load(b1_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    z = tl.maximum(acc, 0.0)  # masked columns are exactly 0 here and meet w2 = 0 below
    for c in tl.static_range(C):
        w2c = tl.load(w2_ptr + c * stride_w2c + cols * stride_w2k, mask=col_mask, other=0.0).to(tl.float32)
        part = tl.sum(z * w2c[None, :], axis=1)
        tl.store(partial_ptr + rows * (NSLOT * C) + pid_n * C + c, part, mask=row_mask)


@triton.autotune(configs=LINEAR_CONFIGS, key=["H", "R_BUCKET"], prune_configs_by=prune_configs("linear_partials"))
@triton.jit
def _linear_partials_kernel(
    hidden_ptr, row_traj_ptr, row_pos_ptr, seq_off_ptr, w2_ptr, partial_ptr,
    R, H, R_BUCKET,
    stride_b, stride_t, stride_h, stride_w2c, stride_w2k,
    C: tl.constexpr, PACKED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # C (1 or 2) is far below tl.dot's 16-wide minimum: an elementwise multiply-accumulate, reduced once at the end.
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < R
    row_off = _row_offsets(row_traj_ptr, row_pos_ptr, seq_off_ptr, rows, row_mask, stride_b, stride_t, PACKED)
    acc0 = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < H
        x = tl.load(hidden_ptr + row_off[:, None] + ks[None, :] * stride_h,
                    mask=row_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
        w0 = tl.load(w2_ptr + ks * stride_w2k, mask=k_mask, other=0.0).to(tl.float32)
        acc0 += x * w0[None, :]
        if C == 2:
            w1 = tl.load(w2_ptr + stride_w2c + ks * stride_w2k, mask=k_mask, other=0.0).to(tl.float32)
            acc1 += x * w1[None, :]
    tl.store(partial_ptr + rows * C, tl.sum(acc0, axis=1), mask=row_mask)
    if C == 2:
        tl.store(partial_ptr + rows * C + 1, tl.sum(acc1, axis=1), mask=row_mask)


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def _rewards(partial_ptr, b2_ptr, rows, row_mask, NSLOT, C: tl.constexpr, HAS_B2: tl.constexpr,
             NSLOT_P2: tl.constexpr):
    """Rewards of `rows`: sum the slots, add b2, sigmoid (C = 1) or class-1 softmax probability (C = 2)."""
    slots = tl.arange(0, NSLOT_P2)
    ptrs = partial_ptr + rows[:, None] * (NSLOT * C) + slots[None, :] * C
    mask = row_mask[:, None] & (slots < NSLOT)[None, :]
    logit0 = tl.sum(tl.load(ptrs, mask=mask, other=0.0), axis=1)
    if HAS_B2:
        logit0 += tl.load(b2_ptr).to(tl.float32)
    if C == 1:
        reward = tl.sigmoid(logit0)
    else:
        logit1 = tl.sum(tl.load(ptrs + 1, mask=mask, other=0.0), axis=1)
        if HAS_B2:
            logit1 += tl.load(b2_ptr + 1).to(tl.float32)
        reward = tl.sigmoid(logit1 - logit0)  # = softmax([l0, l1])[1]
    return reward


@triton.jit
def _finish_kernel(
    partial_ptr, b2_ptr, offsets_ptr, step_out_ptr, traj_out_ptr, score_out_ptr,
    S, NSLOT, alpha,
    C: tl.constexpr, HAS_B2: tl.constexpr, HAS_FINAL: tl.constexpr, AGG: tl.constexpr,
    NSLOT_P2: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0)
    lo = tl.load(offsets_ptr + b)
    hi = tl.load(offsets_ptr + b + 1)
    lane = tl.arange(0, BLOCK_S)
    total = tl.zeros((), dtype=tl.float32)
    lowest = tl.full((), float("inf"), dtype=tl.float32)
    product = tl.full((), 1.0, dtype=tl.float32)
    last = tl.zeros((), dtype=tl.float32)
    for start in range(lo, hi, BLOCK_S):
        rows = start + lane
        mask = rows < hi
        r = _rewards(partial_ptr, b2_ptr, rows, mask, NSLOT, C, HAS_B2, NSLOT_P2)
        tl.store(step_out_ptr + rows, r, mask=mask)
        total += tl.sum(tl.where(mask, r, 0.0), axis=0)
        lowest = tl.minimum(lowest, tl.min(tl.where(mask, r, float("inf")), axis=0), propagate_nan=tl.PropagateNan.ALL)
        product *= tl.reduce(tl.where(mask, r, 1.0), 0, _mul)
        last += tl.sum(tl.where(rows == hi - 1, r, 0.0), axis=0)

    n = hi - lo
    if HAS_FINAL:
        frows = S + b + lane
        fr = _rewards(partial_ptr, b2_ptr, frows, lane == 0, NSLOT, C, HAS_B2, NSLOT_P2)
        final = tl.sum(tl.where(lane == 0, fr, 0.0), axis=0)
    else:
        final = tl.where(n > 0, last, float("nan"))
    mean = total / tl.maximum(n, 1).to(tl.float32)
    if AGG == "mean":
        score = mean
    elif AGG == "min":
        score = lowest
    elif AGG == "last":
        score = last
    elif AGG == "prod":
        score = product
    else:  # "reasonflux"
        score = mean + alpha * final
    tl.store(traj_out_ptr + b, final)
    tl.store(score_out_ptr + b, tl.where(n > 0, score, float("nan")))
