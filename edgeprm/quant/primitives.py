"""Quantization primitives: pure tensor functions, held bit-exact against torch and bitsandbytes by the tests.

- int8 rowwise: symmetric per output row, scale = absmax / 127, rounded as `torch.quantize_per_channel` rounds
  (the fbgemm kernel's own quantizer), bit for bit; one stored form serves both int8 kernels.
- NF4: bitsandbytes' 4-bit NormalFloat in blocks of `blocksize` consecutive weights, with its quant state.
`quantize_weight` gives a Linear weight in a checkpoint's stored form ({suffix: tensor}).
"""

from __future__ import annotations

import torch

SCALE_SUFFIX = "_scale"  # int8: "<linear>.weight" int8 [out, in], "<linear>.weight_scale" fp32 [out]


def quantize_int8_rowwise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, in] (any float dtype) -> (q int8 [out, in], scale fp32 [out]) with w ~= q * scale[:, None].

    Symmetric per output row: scale = absmax / 127, q = round(w * (1 / scale)) in fp32 (half to even), exactly as
    `torch.quantize_per_channel` rounds (the fbgemm kernel's own quantizer); all-zero rows get scale 1.
    """
    w = w.float()
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax))
    q = torch.round(w * (1.0 / scale)[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8_rowwise(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


def _bnb():
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise ValueError("this quantization needs bitsandbytes (pip install 'bitsandbytes>=0.45'); quantization="
                         "'int8' with its default CPU kernel runs without it") from e
    return bnb


def quantize_nf4(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """w [out, in] -> (packed uint8 [(out*in+1)//2, 1], quant state as bitsandbytes serialises it).

    Quantized from bf16 (the compute dtype), blocks of `blocksize` consecutive weights, no double quantization: the
    CPU kernel expands nested statistics back to bf16 anyway.
    """
    bnb = _bnb()
    packed, qs = bnb.functional.quantize_4bit(w.to(torch.bfloat16).contiguous(), blocksize=blocksize,
                                              compress_statistics=False, quant_type="nf4")
    return packed, qs.as_dict(packed=True)


def dequantize_nf4(packed: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    bnb = _bnb()
    qs = bnb.functional.QuantState.from_dict(state, device=packed.device)
    return bnb.functional.dequantize_4bit(packed, qs)


def quantize_weight(storage: str, w: torch.Tensor, blocksize: int = 64) -> dict[str, torch.Tensor]:
    """A Linear weight in a checkpoint's stored form: {suffix: tensor}, suffixes relative to '<linear>.weight'."""
    if storage == "int8":
        q, scale = quantize_int8_rowwise(w)
        return {"": q, SCALE_SUFFIX: scale}
    packed, state = quantize_nf4(w, blocksize)
    return {"": packed, **{"." + k: v for k, v in state.items()}}

