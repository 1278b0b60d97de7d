"""Error-compensated 4-bit rounding (GPTQ's column-by-column update) on the two 4-bit grids edgeprm stores:
bitsandbytes' NF4 (torch backend) and onnxruntime's symmetric MatMulNBits int4 (ONNX bundles).

Round-to-nearest NF4 rounds each weight on its own. GPTQ rounds the columns of a Linear weight one at a time and
moves each column's rounding error onto the columns not yet rounded, weighted by the inverse Hessian of the layer's
squared output error, H = X^T X over calibration activations X [tokens, in]. The output error on those activations
falls well below round-to-nearest's, for the same 4-bit format: the result is stored exactly as bitsandbytes stores
NF4 (the codes of blocks of `blocksize` consecutive weights of a row, one fp32 absmax per block), so every NF4 kernel
runs it unchanged.

MatMulNBits' symmetric int4 is the same kind of grid: per block of `blocksize` weights along K, value = scale * (q - 8)
with scale = m / -8, m the block's signed largest-magnitude weight. As a table that is INT4_CODE = k/8, k = -7..8,
times m (signed), so one routine rounds to both (`signed=True` for int4); `matmul_nbits_stored` writes the result
in onnxruntime's stored form, which its round-to-nearest quantizer would write for the same grid.

Per block, the absmax is taken from the weights as they stand when the block's first column comes up (already
carrying the earlier columns' corrections), and shrunk by the factor in SHRINK that gives the block's columns the
smallest squared rounding error there; weights past the absmax clip to +-1.

Written here: the GPTQ implementations looked at (GPTQModel, llm-compressor, torchao's prototype) round to uniform
int grids with a zero point, not to NF4's table with an absmax; GPTQModel and torchao also do not install on this CPU
torch (see edgeprm.quant.calibrate).
"""

from __future__ import annotations

import torch

DAMP = 0.01  # of the mean diagonal of H, added to it: keeps the Cholesky factorisation defined
COLUMNS = 128  # columns rounded between the lazy updates of the rest of the matrix (a multiple of the NF4 block)
SHRINK = (1.0, 0.95, 0.9, 0.85, 0.8)
INT4_CODE = torch.arange(-7, 9, dtype=torch.float32) / 8  # MatMulNBits symmetric int4, in units of the signed max


class Hessian:
    """H = sum x^T x over the rows seen (fp32, as GPTQ keeps it; the damping keeps its factorisation stable)."""

    def __init__(self, features: int):
        self.h = torch.zeros(features, features)
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.h.addmm_(x.T, x)
        self.rows += x.shape[0]

    def scaled(self, s: torch.Tensor | None) -> torch.Tensor:
        """H of the inputs divided by the smoothing factors s (x / s): diag(1/s) H diag(1/s)."""
        if s is None:
            return self.h
        inv = 1.0 / s.float()
        return self.h * inv[:, None] * inv[None, :]


def _nearest(v: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the nearest NF4 code of every value of v (clipped to [-1, 1]); code is sorted ascending."""
    mids = (code[1:] + code[:-1]) / 2
    return torch.bucketize(v.clamp(-1, 1), mids)


def gptq_round(w: torch.Tensor, h: torch.Tensor, code: torch.Tensor, blocksize: int = 64, signed: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8 [out, in], absmax fp32 [out, in // blocksize]) for w [out, in] given H [in, in]: indices into
    the sorted table `code` (within [-1, 1]) and one scale per block. signed=True takes the block's signed
    largest-magnitude weight as its scale (MatMulNBits' int4), else its absolute value (NF4).

    Dequantized: code[codes] * absmax repeated over each block's `blocksize` columns.
    """
    out_f, in_f = w.shape
    if in_f % blocksize or (COLUMNS % blocksize and blocksize % COLUMNS):
        raise ValueError(f"GPTQ rounding needs rows of whole {blocksize}-weight blocks; got {in_f} columns")
    w = w.float().clone()
    code = code.float()
    h = h.float().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(DAMP * h.diagonal().mean())
    u = _upper_factor_of_inverse(h)
    mids = (code[1:] + code[:-1]) / 2
    codes = torch.empty(out_f, in_f, dtype=torch.uint8)
    absmax = torch.empty(out_f, in_f // blocksize)
    for a in range(0, in_f, COLUMNS):
        b = min(a + COLUMNS, in_f)
        w1, u1 = w[:, a:b].clone(), u[a:b, a:b]
        err1 = torch.zeros_like(w1)
        for i in range(b - a):
            col = a + i
            if col % blocksize == 0:  # a block's first column: its weights as they stand now
                block = w1[:, i:i + blocksize] if i + blocksize <= b - a else w[:, col:col + blocksize]
                absmax[:, col // blocksize] = _block_scale(block, code, signed)
            scale = absmax[:, col // blocksize]
            safe = torch.where(scale != 0, scale, torch.ones_like(scale))
            idx = torch.bucketize((w1[:, i] / safe).clamp_(-1, 1), mids)
            codes[:, col] = idx
            err = (w1[:, i] - code[idx] * scale).div_(u1[i, i])
            w1[:, i:].addr_(err, u1[i, i:], alpha=-1)
            err1[:, i] = err
        w[:, b:].sub_(err1 @ u[a:b, b:])
    return codes, absmax


def _upper_factor_of_inverse(h: torch.Tensor) -> torch.Tensor:
    """U upper triangular with U^T U = H^-1: row i holds the update that column i's rounding error makes to the
    columns after it. With P the reversal and P H P = M M^T, U = P M^-1 P: one Cholesky factorisation and one
    triangular inverse, half the work of factorising H, inverting it and factorising the inverse."""
    return _lower_inverse(torch.linalg.cholesky(h.flip(0, 1))).flip(0, 1)


def _lower_inverse(m: torch.Tensor) -> torch.Tensor:
    """The inverse of a lower triangular m, by halves: [[A, 0], [B, C]]^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]], so
    the work is in matrix products. `solve_triangular` against the identity does not use the identity's zeros:
    measured 4.2 s against ~1.5 s for 8960 x 8960 on 2 threads."""
    n = m.shape[0]
    if n <= 512:
        return torch.linalg.solve_triangular(m, torch.eye(n, dtype=m.dtype), upper=False)
    k = n // 2
    a, c = _lower_inverse(m[:k, :k]), _lower_inverse(m[k:, k:])
    out = torch.zeros_like(m)
    out[:k, :k], out[k:, k:] = a, c
    out[k:, :k] = -(c @ (m[k:, :k] @ a))
    return out


def _block_scale(block: torch.Tensor, code: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """Per row, the absmax (shrunk by one of SHRINK) that rounds the block with the least squared error; signed: the
    largest-magnitude weight with its sign."""
    amax = block.gather(1, block.abs().argmax(1, keepdim=True)).squeeze(1) if signed else block.abs().amax(1)
    best, best_err = amax.clone(), torch.full_like(amax, float("inf"))
    for f in SHRINK:
        scale = amax * f
        safe = torch.where(scale != 0, scale, torch.ones_like(scale))
        err = (code[_nearest(block / safe[:, None], code)] * scale[:, None] - block).pow(2).sum(1)
        better = err < best_err
        best, best_err = torch.where(better, scale, best), torch.where(better, err, best_err)
    return best


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    out_f, in_f = codes.shape
    return (code.float()[codes.long()].view(out_f, -1, blocksize) * absmax[:, :, None]).view(out_f, in_f)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' packed form [(out*in)//2, 1] uint8: two codes a byte, the first in the high nibble."""
    flat = codes.reshape(-1, 2)
    return ((flat[:, 0] << 4) | flat[:, 1]).to(torch.uint8).reshape(-1, 1)


def nf4_stored(w: torch.Tensor, h: torch.Tensor, blocksize: int = 64) -> dict[str, torch.Tensor]:
    """w [out, in] rounded by `gptq_round` against H, in the stored form of `edgeprm.quant.primitives.quantize_weight`
    (bitsandbytes' packed codes, absmax and quant state: every NF4 kernel and checkpoint reads it unchanged)."""
    from edgeprm.quant.primitives import quantize_nf4

    _, state = quantize_nf4(w, blocksize)  # bitsandbytes' quant state for this shape: its code table and layout
    codes, absmax = gptq_round(w, h, state["quant_map"], blocksize)
    return {"": pack(codes), **{"." + k: v for k, v in state.items()}, ".absmax": absmax.reshape(-1).contiguous()}


def matmul_nbits_stored(w: torch.Tensor, h: torch.Tensor, blocksize: int = 32) -> dict[str, torch.Tensor]:
    """w [out, in] rounded by `gptq_round` to MatMulNBits' symmetric int4 against H, in onnxruntime's stored form:
    "q" uint8 [out, in // blocksize, blocksize // 2] (q = 8 + value / scale, two a byte, the first of a pair in the
    low nibble) and "scales" fp32 [out, in // blocksize] (the signed max / -8), the initializers of a MatMulNBits node
    whose constant B is w^T."""
    codes, m = gptq_round(w, h, INT4_CODE, blocksize, signed=True)
    q = (15 - codes).view(w.shape[0], -1, blocksize // 2, 2)  # code index i is k = i - 7, stored as 8 - k
    return {"q": (q[..., 0] | (q[..., 1] << 4)).to(torch.uint8).contiguous(), "scales": (m / -8).contiguous()}
