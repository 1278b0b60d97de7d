"""Quantized modules for the torch backend's 8-bit and 4-bit backbones, and the loading transform that builds them.

Only the backbone's Linear layers are quantized. The reward head is not part of the backbone and stays fp32; norms,
biases and the rotary tables stay in the compute dtype (`dtype=`); the embedding table keeps the checkpoint's own
dtype (a bf16 checkpoint's table stays bf16, rows come out in the compute dtype: exactly the values of an upcast,
at half the memory). `QuantConfig.keep` keeps chosen Linear layers at full precision too; `QuantConfig(embeddings=
"int8")` stores the embedding table as int8 rows with a scale each (a lookup returns exactly q * scale), which is
~0.22 GB less at the 1.5B shape.

The fbgemm kernel is the one behind `torch.ao.nn.quantized.dynamic.Linear`: weights int8 per output channel,
activations quantized to uint8 per call. That kernel takes one range for the whole input tensor, so
`FbgemmInt8Linear` scales each token to absmax 1 around it: per-token activation scales, so that one outlier token
no longer coarsens its batchmates (scores still move with batch composition within the quantization error, through
the shared rounding grid). It is the fast CPU path (int8 GEMM, ~1.4x a bf16 GEMM on an AVX-512 CPU). Activations
use the full 8 bits where the CPU's u8*s8 dot product does not saturate (probed once: AVX512-VNNI does not), else 7
bits as torch's default does. By default each token goes in as two such digits, the second the first's rounding
error (`QuantConfig.wide_activations`; `FbgemmInt8Linear._two_digits`): one GEMM of twice the rows for activations
good to ~16 bits, whose results no longer depend on the batch. NF4's activations stay bf16; bitsandbytes int8
quantizes per row, and only its choice of fp16 outlier columns depends on the batch.

Weights are quantized while they are loaded (`edgeprm.loading.load_backbone`'s `transform` hook), one Linear at a
time: a full-precision model never sits in memory. `edgeprm quantize` (`edgeprm.quant.checkpoint`) writes the
quantized tensors to disk with their manifest, and `edgeprm.load(dir)` rebuilds the modules from them directly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
from torch import nn

from edgeprm.kernels.cpu_linear import linear as onednn_linear
from edgeprm.quant.config import QuantConfig, as_quant_config
from edgeprm.quant.primitives import SCALE_SUFFIX, _bnb, quantize_int8_rowwise, quantize_weight


@functools.cache
def int8_dot_saturates(engine: str = "fbgemm") -> bool:
    """Whether the engine's u8*s8 GEMM saturates 16-bit pair sums on this CPU (fbgemm on AVX2 without VNNI does).

    255 * 127 * 2 overflows int16: with saturation, 64 products of 1.0 * 1.0 do not come out as 64.
    """
    k = 64
    ones = torch.ones(1, k)
    q, scale = quantize_int8_rowwise(ones)
    y = torch.ops.quantized.linear_dynamic(ones, _fbgemm_pack(q, scale, None, engine), reduce_range=False)
    return abs(y.item() - k) > 1e-3 * k


def _fbgemm_pack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, engine: str = "fbgemm"):
    """Weights packed for torch's dynamic int8 GEMM by `engine` (fbgemm or onednn); the packed object carries its
    engine, so the GEMM runs on it whatever `torch.backends.quantized.engine` says later."""
    previous = torch.backends.quantized.engine
    try:
        with warnings.catch_warnings():  # torch marks quantized tensors deprecated; the kernel is what we use
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = engine
            zero = torch.zeros(q.shape[0], dtype=torch.long)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
            return torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.float().contiguous())
    except (AttributeError, RuntimeError) as e:
        raise ValueError(f"this torch build has no {engine} int8 kernel ({e}); use QuantConfig('int8', "
                         "kernel='bnb-int8') or quantization='int4'") from e
    finally:
        torch.backends.quantized.engine = previous


MIN_TOKEN_SCALE = 1e-30  # 127 / 1e-30 is finite in float32; activations that small are zero to the GEMM anyway


class FbgemmInt8Linear(nn.Module):
    """y = x @ W.T + b with W int8 per output channel and x quantized per token: torch's dynamic int8 GEMM, run by
    fbgemm (`engine="fbgemm"`, AVX2 and AVX-512) or oneDNN (`engine="onednn"`, which uses AVX512-VNNI and AMX).

    The kernel quantizes its input with one range for the whole tensor, so one outlier token would coarsen every
    other token of the batch (and a row's result would depend on what it is batched with). Each token is therefore
    divided by its own absmax before the call and the output row multiplied back (the bias added after): per-token
    activation scales from a per-tensor kernel, at the cost of one scaling pass. The kernel is the one of
    `torch.ao.nn.quantized.dynamic.Linear`, held directly: that module packs a dummy weight of the full size in its
    constructor and takes fp32 input only. x: [..., in] any float dtype, computed in fp32, returned in x's dtype.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool,
                 engine: str = "fbgemm", digits: int = 1):
        super().__init__()
        self.out_features, self.in_features = q.shape
        if digits not in (1, 2) or (digits == 2 and self.in_features < 2):
            raise ValueError(f"digits must be 1 or 2 (2 needs at least 2 inputs); got {digits} for {q.shape}")
        self.reduce_range, self.engine, self.digits = bool(reduce_range), engine, digits
        self._packed = _fbgemm_pack(q, scale, None, engine)
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous(), persistent=False)
        # fbgemm keeps the packed int8 matrix plus, per output channel, a scale, a zero point, a column offset
        # (4 bytes each); the fp32 bias is kept beside it.
        self._bytes = q.numel() + 12 * self.out_features + (0 if bias is None else 4 * self.out_features)

    def storage_bytes(self) -> int:
        return self._bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float().reshape(-1, self.in_features)
        # A token of all zeros (a pad's or an unused embedding row) keeps a scale whose inverse times top stays
        # finite: with float32's smallest normal, top / scale overflowed to inf and 0 * inf gave NaN digits.
        token_scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(MIN_TOKEN_SCALE)
        if self.digits == 2:
            y = self._two_digits(xf, token_scale)
        else:
            y = torch.ops.quantized.linear_dynamic((xf / token_scale).contiguous(), self._packed,
                                                   reduce_range=self.reduce_range)
            y = y * token_scale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _two_digits(self, xf: torch.Tensor, token_scale: torch.Tensor) -> torch.Tensor:
        """x @ W.T with each token written as two int8 digits, x / absmax ~= (d1 + d2 / (2 top)) / top, both run in
        one GEMM of twice the rows: activations good to ~1 / (2 top^2) of their absmax (1.6e-5 at 8 bits).

        The kernel quantizes its input with the range of the whole tensor; one extra row holding -(top + 1) and top
        fixes that range to 2 top + 1 steps of exactly 1 (zero point top + 1), so integer digits pass through its
        quantizer unchanged and the int32 sums are those of the digits (tests hold them to fp32 rounding).
        """
        top = 63 if self.reduce_range else 127  # 7-bit activations where the u8*s8 dot product saturates
        t, k = xf.shape
        buf = torch.empty(2 * t + 1, k)
        d1, d2 = buf[:t], buf[t : 2 * t]
        torch.mul(xf, top / token_scale, out=d2)  # the scaled token, in place of a temporary
        torch.round(d2, out=d1)
        d2.sub_(d1).mul_(2 * top).round_()
        buf[2 * t].zero_()
        buf[2 * t, :2] = torch.tensor([-(top + 1.0), float(top)])
        y = torch.ops.quantized.linear_dynamic(buf, self._packed, reduce_range=self.reduce_range)
        return torch.add(y[:t], y[t : 2 * t], alpha=1.0 / (2 * top)).mul_(token_scale / top)

    def extra_repr(self) -> str:
        bits = 7 if self.reduce_range else 8
        acts = f"two {bits}-bit digits" if self.digits == 2 else f"{bits}-bit"
        return (f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}, "
                f"activations={acts} per token")


_SCRATCH: dict[tuple, torch.Tensor] = {}


def _scratch(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One reusable buffer per (dtype, device), grown to the largest request: the expanded weights of one chunk (or,
    for `Nf4DenseLinear.dequantize`, one layer). Layers run one after another, so every `Nf4DenseLinear` of a model
    shares it. Not for concurrent forwards from several threads (a scorer is used from one thread at a time).
    """
    key = (dtype, torch.device(device))
    buf = _SCRATCH.get(key)
    # a buffer made under torch.inference_mode cannot be written outside it (dequantize after a scoring call)
    if buf is None or buf.numel() < numel or (buf.is_inference() and not torch.is_inference_mode_enabled()):
        buf = _SCRATCH[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


_PAIRS: dict[tuple, torch.Tensor] = {}


def _code_pairs(code: torch.Tensor) -> torch.Tensor:
    """[256] int64: the two fp32 code values of every byte (the first weight in the high nibble, bitsandbytes' order)
    as one 8-byte word holding their bytes in order, so that a gather into a float32 buffer viewed as int64 writes
    both weights at once. One table per code and device, shared by every layer (NF4's code is the same everywhere).
    A 1-D int64 gather is 4x faster than gathering [256, 2] fp32 rows: 0.21 against 0.84 ms per 524k bytes (AMD
    EPYC with AVX-512, 2 threads)."""
    key = (code.device, tuple(code.tolist()))
    if key not in _PAIRS:
        b = torch.arange(256, device=code.device)
        _PAIRS[key] = torch.stack([code[b >> 4], code[b & 15]], -1).contiguous().view(torch.int64).reshape(256)
    return _PAIRS[key]


class Nf4DenseLinear(nn.Module):
    """y = x @ dequant(W).T + b: NF4 weights (bitsandbytes' stored form, blocks of `blocksize` with an fp32 absmax
    each) expanded to x's dtype right before a dense GEMM, one layer at a time.

    4-bit weights stay in memory; the GEMM is the dense one of x's dtype (fp32 on a CPU without native bf16, where
    every 4-bit GEMM kernel measured here is slower than fp32: see bench/QUANT.md). The expansion is one table
    lookup per packed byte (a table of NF4 code pairs, one 8-byte word per byte) and one multiply per block; prefill
    amortises it over the tokens of a batch. It runs in chunks of up to 8M weights (32 MB of fp32 scratch, shared by
    all layers): on oneDNN, 512 tokens x 8960 -> 1536 took 53 ms in 1M-weight chunks (116 output rows each, too
    narrow for its GEMM) and 44 ms in 8M-weight ones, against 33 ms for the packed fp32 GEMM alone
    (bench/bench_nf4_dense.py, AMD EPYC with AVX-512, 2 threads). Dequantized values equal bitsandbytes'
    `dequantize_4bit` bit for bit (fp32 products of code and absmax; tests hold them equal).
    """

    CHUNK_ELEMENTS = 1 << 23  # weights expanded per step (32 MB of fp32 scratch)

    def __init__(self, packed: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int,
                 shape: tuple[int, int], bias: torch.Tensor | None, gemm: str = "mkl"):
        super().__init__()
        if gemm not in ("mkl", "onednn"):
            raise ValueError(f"gemm must be 'mkl' or 'onednn'; got {gemm!r}")
        self.gemm = gemm  # the engine of the fp32 chunk products on a CPU (edgeprm.quant.select.fp32_gemm)
        self.out_features, self.in_features = shape
        if shape[1] % blocksize or blocksize % 2:
            raise ValueError(f"a {shape} layer's rows do not split into {blocksize}-weight blocks; use kernel "
                             "'bnb-nf4' for it")
        self.blocksize = blocksize
        self.register_buffer("packed", packed.reshape(-1).contiguous())
        self.register_buffer("absmax", absmax.float().reshape(-1, 1).contiguous())
        self.register_buffer("code", code.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous(), persistent=False)

    def storage_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.absmax, self.code, self.bias)
                   if t is not None)

    def _expand(self, a: int, r: int, pairs: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Output rows [a, a + r) of the dense fp32 weight, [r, in], written into the scratch `w` (the packed codes
        staged as int32 in `idx`, as index_select wants them; `pairs` is `_code_pairs(self.code)`)."""
        k, per_row = self.in_features, self.in_features // self.blocksize
        ib, wb = idx[: r * k // 2], w[: r * k]
        ib.copy_(self.packed[a * k // 2 : (a + r) * k // 2])
        torch.index_select(pairs, 0, ib, out=wb.view(torch.int64))
        return wb.view(-1, self.blocksize).mul_(self.absmax[a * per_row : (a + r) * per_row]).view(r, k)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight [out, in] in `dtype` (a view of the shared scratch buffer: use it before the next call)."""
        n, dev = self.packed.numel() * 2, self.packed.device
        w = self._expand(0, self.out_features, _code_pairs(self.code), _scratch(n // 2, torch.int32, dev),
                         _scratch(n, torch.float32, dev))
        return w if dtype == torch.float32 else w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k = self.out_features, self.in_features
        rows = max(self.blocksize, (self.CHUNK_ELEMENTS // k) // 2 * 2)
        # Contiguous once, not per chunk: the input of a layer after elementwise ops on strided outputs is strided,
        # and copying it for each of a 1536 -> 8960 layer's 13 chunks cost 0.36 of 1.47 s per 4-layer prefill.
        x2 = x.reshape(-1, k).contiguous()
        idx = _scratch(rows * k // 2, torch.int32, x.device)
        w = _scratch(rows * k, torch.float32, x.device)
        pairs = _code_pairs(self.code)
        # oneDNN's fp32 GEMM on the plain expanded chunk: 512 x 1536 -> 8960 in 42.9 ms against torch.mm's 87.3 ms
        # on the AMD EPYC with AVX-512 (bench/bench_nf4_dense.py; the mkl/onednn choice of the fp32 Linear layers)
        onednn = self.gemm == "onednn" and x.dtype == torch.float32 and x.device.type == "cpu"
        if onednn:
            y = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
        else:
            out_t = torch.empty(n, x2.shape[0], dtype=x.dtype, device=x.device)
            xt = x2.T.contiguous()  # [k, tokens]: each chunk's product is a contiguous block of out_t's rows
        for a in range(0, n, rows):
            r = min(rows, n - a)
            wb = self._expand(a, r, pairs, idx, w)
            if onednn:
                y[:, a : a + r] = onednn_linear(x2, wb)
            else:
                torch.mm(wb if x.dtype == torch.float32 else wb.to(x.dtype), xt, out=out_t[a : a + r])
        if not onednn:
            y = out_t.T.contiguous()  # the next layers' inputs stay contiguous
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], n)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4 blocks of {self.blocksize}"


class CastEmbedding(nn.Embedding):
    """An embedding table kept in its (16-bit) checkpoint dtype whose rows come out in the compute dtype."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).to(self.out_dtype)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, padding_idx: int | None, out_dtype: torch.dtype) -> CastEmbedding:
        e = cls(weight.shape[0], weight.shape[1], padding_idx, device="meta")
        e.weight = nn.Parameter(weight, requires_grad=False)
        e.out_dtype = out_dtype
        return e


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows [V, H] with an fp32 scale per row; a lookup returns q * scale."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, padding_idx: int | None, out_dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight", q)
        self.register_buffer("scale", scale.float())
        self.padding_idx, self.out_dtype = padding_idx, out_dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids, self.weight).float() * self.scale[ids].unsqueeze(-1)
        return rows.to(self.out_dtype)


def _bnb_cpu_gemm_loaded() -> bool:
    try:
        from bitsandbytes.backends.cpu import ops
    except ImportError:
        return False
    return getattr(ops, "gemm_4bit_forward_kernel", None) is not None


@functools.cache
def _bnb_int8_class():
    bnb = _bnb()

    class BnbInt8Linear(bnb.nn.Linear8bitLt):
        """bitsandbytes LLM.int8; the input goes in as fp16 (bitsandbytes casts it anyway, and logs each time)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.to(torch.float16)).to(x.dtype)

    return BnbInt8Linear


def build_linear(kernel: str, stored: dict[str, torch.Tensor], bias: torch.Tensor | None, shape: tuple[int, int],
                 cfg: QuantConfig, device: torch.device, name: str = "") -> nn.Module:
    """A quantized Linear of `shape` (out, in) for `kernel`, from its stored tensors (see `quantize_weight`)."""
    out_f, in_f = shape
    if kernel in ("fbgemm", "onednn"):
        rr = int8_dot_saturates(kernel) if cfg.reduce_range is None else cfg.reduce_range
        return FbgemmInt8Linear(stored[""], stored[SCALE_SUFFIX], bias, rr, engine=kernel,
                                digits=2 if cfg.wide(name) else 1)
    if kernel == "nf4-dense":
        from edgeprm.quant.select import fp32_gemm

        gemm = fp32_gemm() if torch.device(device).type == "cpu" else "mkl"
        return Nf4DenseLinear(stored[""].to(device), stored[".absmax"].to(device), stored[".quant_map"].to(device),
                              cfg.nf4_blocksize, shape, bias, gemm=gemm).eval()
    bnb = _bnb()
    if kernel == "bnb-int8":
        q, scale = stored[""].to(device), stored[SCALE_SUFFIX].to(device).float()
        with torch.device("meta"):
            m = _bnb_int8_class()(in_f, out_f, bias is not None, has_fp16_weights=False,
                                  threshold=cfg.int8_threshold)
        m.weight = bnb.nn.Int8Params(q, requires_grad=False, has_fp16_weights=False, CB=q, SCB=scale * 127.0)
    else:
        state = {k[1:]: v.to(device) for k, v in stored.items() if k}
        with torch.device("meta"):
            m = bnb.nn.Linear4bit(in_f, out_f, bias is not None, compute_dtype=torch.bfloat16, quant_type="nf4",
                                  compress_statistics=False)
        m.weight = bnb.nn.Params4bit.from_prequantized(stored[""].to(device), state, requires_grad=False,
                                                       device=device, module=m)
        # bitsandbytes' packed CPU kernel needs out % 32 == 0 and whole blocks per row, and its GEMM comes from the
        # `kernels` hub package: without it the packed layout runs a GEMV loop, measured 10x slower (114 vs 11 ms
        # for 512 x 1536 -> 8960 on an AMX CPU) than dequantizing with bitsandbytes' C kernel and a bf16 GEMM.
        m.support_avx512bf16_for_cpu = (m.support_avx512bf16_for_cpu and out_f % 32 == 0
                                        and in_f % cfg.nf4_blocksize == 0 and _bnb_cpu_gemm_loaded())
        convert = getattr(bnb.functional, "_convert_weight_packed_for_cpu", None)
        if device.type == "cpu" and m.support_avx512bf16_for_cpu and convert is not None:
            # The repacking bitsandbytes' forward does at the first call, done here one layer at a time: the first
            # call is not slowed by every layer's repacking, nor the heap left holding its temporaries.
            m.weight.data, m.weight.quant_state = convert(m.weight.data, m.weight.quant_state)
        bias = None if bias is None else bias.to(torch.bfloat16)  # bitsandbytes would cast it at the first call
    if bias is not None:
        m.bias = nn.Parameter(bias.to(device), requires_grad=False)
    return m.eval()


# -- building quantized backbones ---------------------------------------------------------------------------------
Read = Callable[[str], torch.Tensor]


def make_transform(cfg: QuantConfig, device: torch.device, compute_dtype: torch.dtype, stored=None, calibrated=None):
    """The `load_backbone` transform: quantized Linears, embeddings kept in their checkpoint dtype.

    Without `stored`, Linear weights are read in full precision and quantized here, one at a time. With `stored`
    (a quantized checkpoint: `edgeprm.quant.checkpoint.StoredCheckpoint`), the modules its manifest lists are
    rebuilt from their stored tensors. `calibrated` (an `edgeprm.quant.calibrate.Smoothing`) gives the Linear
    weights its calibration already rounded (int4 with GPTQ rounding); the others are rounded here.
    """
    device = torch.device(device)
    kernel = cfg.kernel_for(device, compute_dtype)
    listed = set(stored.manifest.modules) if stored is not None else None
    embeddings = stored.manifest.embeddings if stored is not None else cfg.embeddings

    def transform(name: str, module: nn.Module, read: Read) -> nn.Module | None:
        if isinstance(module, nn.Embedding) and embeddings == "int8":
            shape = (module.num_embeddings, module.embedding_dim)
            if stored is None:
                q, scale = quantize_int8_rowwise(read(name + ".weight"))
            else:
                t = stored.read(name + ".weight", "int8", shape)
                q, scale = t[""], t[SCALE_SUFFIX]
            return Int8Embedding(q.to(device), scale.to(device), module.padding_idx, compute_dtype)
        if isinstance(module, nn.Embedding):
            w = read(name + ".weight")
            if w.dtype.itemsize >= compute_dtype.itemsize:
                return None
            return CastEmbedding.from_weight(w.to(device), module.padding_idx, compute_dtype)
        if not isinstance(module, nn.Linear):
            return None
        shape = (module.out_features, module.in_features)
        if listed is None:
            if cfg.keeps(name):
                return None
            tensors = calibrated.stored(name, cfg.spec.storage, cfg.nf4_blocksize) if calibrated is not None else None
            if tensors is None:
                w = read(name + ".weight")
                tensors = quantize_weight(cfg.spec.storage, w.to(device), cfg.nf4_blocksize)
                del w
        elif name in listed:
            tensors = stored.read(name + ".weight", stored.manifest.storage, shape)
        else:
            return None
        bias = read(name + ".bias").to(device, compute_dtype) if module.bias is not None else None
        built = build_linear(kernel, tensors, bias, shape, cfg, device, name)
        del tensors, bias
        _release_freed_memory()
        return built

    transform.kernel = kernel  # what the scorer reports as its quantization kernel
    return transform


@functools.cache
def _libc_malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _release_freed_memory() -> None:
    """Hand the heap memory freed by one layer's temporaries back to the OS (glibc).

    Each layer frees tens of MB of temporaries; glibc keeps such blocks in its heap once its adaptive mmap threshold
    has grown, and the long-lived packed weights allocated between them pin the holes, so without this the resident
    size after loading drifts 0.3-0.5 GB above the model from run to run.
    """
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


def quantize_backbone(model: nn.Module, quantization: str | QuantConfig, device=None) -> nn.Module:
    """Replace the Linear layers of an already loaded backbone with quantized ones, in place; returns the model.

    `edgeprm.load(..., quantization=...)` quantizes while loading instead, without a full-precision copy. In place
    there is no checkpoint to calibrate on, so this is plain rounding (`QuantConfig.smooth` does not apply).
    """
    cfg = as_quant_config(quantization)
    if cfg is None:
        return model
    from edgeprm.kernels.cpu_linear import unpack_linears

    unpack_linears(model)  # a float32 model loaded on oneDNN's packed GEMM: back to dense Linear layers first
    first = next(model.parameters())
    transform = make_transform(cfg, device or first.device, first.dtype)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            new = transform(name, module, lambda n: model.get_parameter(n).detach())
            if new is not None:
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model
