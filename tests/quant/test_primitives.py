"""Quantization primitives, bit-exact against torch and bitsandbytes."""

import warnings

import pytest
import torch

from edgeprm.quant.primitives import (
    dequantize_int8_rowwise,
    dequantize_nf4,
    quantize_int8_rowwise,
    quantize_nf4,
)

from .shared import bnb, mismatch_report, needs_bnb


@pytest.mark.parametrize("shape", [(41, 401), (7, 1271), (64, 64), (1, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_rowwise_is_bit_exact_with_torch_quantize_per_channel(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    w = (torch.randn(shape, generator=g) * 0.3).to(dtype)
    w[0] = 0  # an all-zero row
    q, scale = quantize_int8_rowwise(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale[0] == 1 and not q[0].any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_channel(w.float(), scale.double(), torch.zeros(shape[0], dtype=torch.long), 0,
                                         torch.qint8).int_repr()
    assert torch.equal(q, ref), mismatch_report(q, ref)
    if bnb is not None:  # it rounds w * (127 / absmax): the same but within an ulp of a .5 tie (bf16 has some)
        cb, scb, _ = bnb.functional.int8_vectorwise_quant(w.float())
        diff = (q.int() - cb.int()).abs()
        assert diff.max() <= 1 and diff.sum() <= 1e-3 * q.numel(), mismatch_report(q, cb)
        torch.testing.assert_close(scale[1:] * 127, scb[1:], rtol=1e-6, atol=0)
    err = (dequantize_int8_rowwise(q, scale) - w.float()).abs()
    assert (err <= scale[:, None] / 2 + 1e-7).all()  # round to nearest: at most half a step


@needs_bnb
# The second ends in a part block. An odd last dimension is left out: bitsandbytes' CPU dequantize sends it to a
# torch.compile'd fallback that takes ~15 s to build here, and no checkpoint edgeprm loads has odd Linear widths.
@pytest.mark.parametrize("shape", [(64, 128), (41, 402)])
def test_nf4_roundtrip_matches_bitsandbytes(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 0.1
    packed, state = quantize_nf4(w)
    assert packed.dtype == torch.uint8 and packed.numel() == (shape[0] * shape[1] + 1) // 2
    ref_packed, qs = bnb.functional.quantize_4bit(w.to(torch.bfloat16), blocksize=64, quant_type="nf4",
                                                  compress_statistics=False)
    assert torch.equal(packed, ref_packed)
    deq = dequantize_nf4(packed, state)
    assert torch.equal(deq, bnb.functional.dequantize_4bit(ref_packed, qs))
    absmax = w.reshape(-1)[: (w.numel() // 64) * 64].reshape(-1, 64).abs().amax(1)
    assert (deq.float() - w).abs().max() <= absmax.max() * 0.2  # NF4's widest gap is ~0.3 of the block absmax

