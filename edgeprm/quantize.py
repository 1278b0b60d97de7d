"""8-bit and 4-bit backbones for the torch scorer: schemes, quantized Linear modules, quantized checkpoints.

Schemes (`SCHEMES`; `edgeprm.scorer.QUANTIZATIONS` is built from it):

| scheme | stored as                               | kernels (`QuantConfig.kernel`)                                  |
|--------|-----------------------------------------|-----------------------------------------------------------------|
| `int8` | int8 [out, in] + an fp32 scale per row  | `fbgemm` dynamic int8 GEMM (CPU default), `bnb-int8` LLM.int8   |
|        |                                         | (`Linear8bitLt`; the CUDA default)                              |
| `int4` | bitsandbytes NF4 (blocks of 64) + state | `bnb-nf4` (`Linear4bit`, bf16 compute) on CPU and CUDA          |

Only the backbone's Linear layers are quantized. The reward head is not part of the backbone and stays fp32; norms,
biases and the rotary tables stay in the compute dtype (`dtype=`); the embedding table keeps the checkpoint's own
dtype (a bf16 checkpoint's table stays bf16, rows come out in the compute dtype: exactly the values of an upcast,
at half the memory). `QuantConfig.keep` keeps chosen Linear layers at full precision too; `QuantConfig(embeddings=
"int8")` stores the embedding table as int8 rows with a scale each (a lookup returns exactly q * scale), which is
~0.22 GB less at the 1.5B shape.

The fbgemm kernel is the one behind `torch.ao.nn.quantized.dynamic.Linear`: weights int8 per output channel,
activations quantized to uint8 per call with one scale for the whole input tensor. Two consequences: it is the fast
CPU path (int8 GEMM, ~1.4x a bf16 GEMM here), and a row's activations share their scale with the other rows of its
batch, so int8 scores move with batch composition within the quantization error (NF4 does not: its activations stay
bf16; bitsandbytes int8 quantizes per row, and only its choice of fp16 outlier columns depends on the batch).
Activations use the full 8 bits where the CPU's u8*s8 dot product does not saturate (probed once: AVX512-VNNI does
not), else 7 bits as torch's default does.

Both int8 kernels are built from one stored form (symmetric, scale = absmax / 127, rounded as
`torch.quantize_per_channel` rounds, bit for bit), so an int8 checkpoint serves either kernel.
Weights are quantized while they are loaded (`load_backbone`'s `transform` hook), one Linear at a time: a full-
precision model never sits in memory. `edgeprm quantize` (edgeprm.quantized_checkpoint) writes the quantized tensors
to disk with an `edgeprm.json` manifest, and `edgeprm.load(dir)` rebuilds the modules from them directly.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

MANIFEST = "edgeprm.json"
FORMAT = "edgeprm-quantized"
FORMAT_VERSION = 1
NF4_BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)
SCALE_SUFFIX = "_scale"  # int8: "<linear>.weight" int8 [out, in], "<linear>.weight_scale" fp32 [out]


@dataclass(frozen=True)
class Scheme:
    """One quantization choice: what a checkpoint stores and the kernels that run it."""

    name: str
    storage: str  # the stored form: "int8" (rowwise) | "nf4"
    kernels: tuple[str, ...]  # every kernel that runs the stored form
    cpu: str  # the default kernel per device type
    cuda: str
    summary: str

    def default_kernel(self, device: torch.device | str) -> str:
        return self.cuda if torch.device(device).type == "cuda" else self.cpu


EMBEDDINGS = ("keep", "int8")
KERNEL_DEVICES = {"fbgemm": ("cpu",), "bnb-int8": ("cpu", "cuda"), "bnb-nf4": ("cpu", "cuda")}
SCHEMES = {
    "int8": Scheme("int8", "int8", ("fbgemm", "bnb-int8"), "fbgemm", "bnb-int8",
                   "int8 weights: fbgemm int8 GEMM on CPU, bitsandbytes LLM.int8 on CUDA"),
    "int4": Scheme("int4", "nf4", ("bnb-nf4",), "bnb-nf4", "bnb-nf4",
                   "bitsandbytes NF4 weights (blocks of 64), bf16 compute"),
}


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a backbone. `edgeprm.load(..., quantization=QuantConfig("int8", kernel="bnb-int8"))`.

    kernel: one of the scheme's kernels (None = its default for the device: see SCHEMES).
    keep: fnmatch patterns of Linear names (as in the backbone, e.g. "layers.0.mlp.*") kept at full precision.
    int8_threshold: bitsandbytes LLM.int8 outlier threshold (activation columns above it run in fp16; 0 = none).
    nf4_blocksize: weights per NF4 absmax block.
    reduce_range: fbgemm 7-bit activations; None = only where the CPU's int8 dot product saturates.
    embeddings: "keep" (the checkpoint's dtype) or "int8" (rowwise int8 table).
    """

    scheme: str
    kernel: str | None = None
    keep: tuple[str, ...] = ()
    int8_threshold: float = 6.0
    nf4_blocksize: int = 64
    reduce_range: bool | None = None
    embeddings: str = "keep"

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"quantization must be one of {tuple(SCHEMES)}; got {self.scheme!r}")
        if self.kernel is not None and self.kernel not in SCHEMES[self.scheme].kernels:
            raise ValueError(f"kernel {self.kernel!r} does not run {self.scheme} weights; choose one of "
                             f"{SCHEMES[self.scheme].kernels}")
        if isinstance(self.keep, str) or not all(isinstance(k, str) for k in self.keep):
            raise ValueError(f"keep must be a tuple of module-name patterns like ('layers.0.*',); got {self.keep!r}")
        object.__setattr__(self, "keep", tuple(self.keep))
        if self.nf4_blocksize not in NF4_BLOCKSIZES:
            raise ValueError(f"nf4_blocksize must be one of {NF4_BLOCKSIZES}; got {self.nf4_blocksize}")
        if self.embeddings not in EMBEDDINGS:
            raise ValueError(f"embeddings must be one of {EMBEDDINGS}; got {self.embeddings!r}")
        if not self.int8_threshold >= 0:
            raise ValueError(f"int8_threshold must be >= 0 (0 disables the outlier columns); got "
                             f"{self.int8_threshold}")

    @property
    def spec(self) -> Scheme:
        return SCHEMES[self.scheme]

    def kernel_for(self, device: torch.device | str) -> str:
        kernel = self.kernel or self.spec.default_kernel(device)
        dev = torch.device(device).type
        if dev not in KERNEL_DEVICES[kernel]:
            raise ValueError(f"the {kernel} kernel runs on {KERNEL_DEVICES[kernel]} only; got device {dev!r}. Choose "
                             f"another kernel of {self.spec.kernels} or leave kernel=None")
        return kernel

    def keeps(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.keep)


def as_quant_config(quantization) -> QuantConfig | None:
    if quantization is None or isinstance(quantization, QuantConfig):
        return quantization
    if quantization not in SCHEMES:
        raise ValueError(f"quantization must be None, one of {tuple(SCHEMES)} or a QuantConfig; got "
                         f"{quantization!r}")
    return QuantConfig(quantization)


# -- primitives (pure tensor functions; the tests hold them bit-exact against torch and bitsandbytes) ------------
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


# -- modules ------------------------------------------------------------------------------------------------------
@functools.cache
def int8_dot_saturates() -> bool:
    """Whether fbgemm's u8*s8 GEMM saturates 16-bit pair sums on this CPU (AVX2 without VNNI does).

    255 * 127 * 2 overflows int16: with saturation, 64 products of 1.0 * 1.0 do not come out as 64.
    """
    k = 64
    ones = torch.ones(1, k)
    q, scale = quantize_int8_rowwise(ones)
    y = torch.ops.quantized.linear_dynamic(ones, _fbgemm_pack(q, scale, None), reduce_range=False)
    return abs(y.item() - k) > 1e-3 * k


def _fbgemm_pack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    try:
        with warnings.catch_warnings():  # torch marks quantized tensors deprecated; the kernel is what we use
            warnings.simplefilter("ignore")
            zero = torch.zeros(q.shape[0], dtype=torch.long)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
            return torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.float().contiguous())
    except (AttributeError, RuntimeError) as e:
        raise ValueError(f"this torch build has no fbgemm int8 kernel ({e}); use QuantConfig('int8', "
                         "kernel='bnb-int8') or quantization='int4'") from e


class FbgemmInt8Linear(nn.Module):
    """y = x @ W.T + b with W int8 per output channel and x quantized per token: fbgemm's dynamic int8 GEMM.

    fbgemm quantizes its input with one range for the whole tensor, so one outlier token would coarsen every other
    token of the batch (and a row's result would depend on what it is batched with). Each token is therefore divided
    by its own absmax before the call and the output row multiplied back (the bias added after): per-token activation
    scales from a per-tensor kernel, at the cost of one scaling pass. The kernel is the one of
    `torch.ao.nn.quantized.dynamic.Linear`, held directly: that module packs a dummy weight of the full size in its
    constructor and takes fp32 input only. x: [..., in] any float dtype, computed in fp32, returned in x's dtype.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.reduce_range = bool(reduce_range)
        self._packed = _fbgemm_pack(q, scale, None)
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous(), persistent=False)
        # fbgemm keeps the packed int8 matrix plus, per output channel, a scale, a zero point, a column offset
        # (4 bytes each); the fp32 bias is kept beside it.
        self._bytes = q.numel() + 12 * self.out_features + (0 if bias is None else 4 * self.out_features)

    def storage_bytes(self) -> int:
        return self._bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float().reshape(-1, self.in_features)
        token_scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        y = torch.ops.quantized.linear_dynamic((xf / token_scale).contiguous(), self._packed,
                                               reduce_range=self.reduce_range)
        y = y * token_scale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activations={'7' if self.reduce_range else '8'}-bit per token")


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


@functools.cache
def _bnb_int8_class():
    bnb = _bnb()

    class BnbInt8Linear(bnb.nn.Linear8bitLt):
        """bitsandbytes LLM.int8; the input goes in as fp16 (bitsandbytes casts it anyway, and logs each time)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.to(torch.float16)).to(x.dtype)

    return BnbInt8Linear


def build_linear(kernel: str, stored: dict[str, torch.Tensor], bias: torch.Tensor | None, shape: tuple[int, int],
                 cfg: QuantConfig, device: torch.device) -> nn.Module:
    """A quantized Linear of `shape` (out, in) for `kernel`, from its stored tensors (see `quantize_weight`)."""
    out_f, in_f = shape
    if kernel == "fbgemm":
        rr = int8_dot_saturates() if cfg.reduce_range is None else cfg.reduce_range
        return FbgemmInt8Linear(stored[""], stored[SCALE_SUFFIX], bias, rr)
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
        # bitsandbytes' packed CPU kernel needs out % 32 == 0 and whole blocks per row; other shapes dequantize.
        m.support_avx512bf16_for_cpu = (m.support_avx512bf16_for_cpu and out_f % 32 == 0
                                        and in_f % cfg.nf4_blocksize == 0)
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


def make_transform(cfg: QuantConfig, device: torch.device, compute_dtype: torch.dtype,
                   stored: dict | None = None, weights=None, prefix: str = ""):
    """The `load_backbone` transform: quantized Linears, embeddings kept in their checkpoint dtype.

    Without `stored`, Linear weights are read in full precision and quantized here, one at a time. With `stored`
    (a quantized checkpoint's manifest), the modules it lists are rebuilt from the stored tensors of `weights`.
    """
    device = torch.device(device)
    kernel = cfg.kernel_for(device)
    listed = set(stored["modules"]) if stored is not None else None

    def transform(name: str, module: nn.Module, read: Read) -> nn.Module | None:
        if isinstance(module, nn.Embedding) and (stored or {}).get("embeddings", cfg.embeddings) == "int8":
            shape = (module.num_embeddings, module.embedding_dim)
            if stored is None:
                q, scale = quantize_int8_rowwise(read(name + ".weight"))
            else:
                t = _read_stored(weights, prefix + name + ".weight", "int8", shape)
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
            w = read(name + ".weight")
            tensors = quantize_weight(cfg.spec.storage, w.to(device), cfg.nf4_blocksize)
            del w
        elif name in listed:
            tensors = _read_stored(weights, prefix + name + ".weight", stored["storage"], shape)
        else:
            return None
        bias = read(name + ".bias").to(device, compute_dtype) if module.bias is not None else None
        built = build_linear(kernel, tensors, bias, shape, cfg, device)
        del tensors, bias
        _release_freed_memory()
        return built

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


def _read_stored(weights, key: str, storage: str, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """One Linear's stored tensors from a quantized checkpoint, checked against the layer's shape."""
    where = f"{weights.model_dir}: quantized tensor {key!r}"
    if key not in weights:
        raise ValueError(f"{where} is missing; the checkpoint does not match its {MANIFEST}. Quantize the full-"
                         "precision checkpoint again with `edgeprm quantize`")
    if storage == "int8":
        q, scale = weights.get(key), weights.get(key + SCALE_SUFFIX) if key + SCALE_SUFFIX in weights else None
        if q.dtype != torch.int8 or tuple(q.shape) != shape or scale is None or tuple(scale.shape) != shape[:1]:
            raise ValueError(f"{where} must be int8 {shape} with an fp32 {key + SCALE_SUFFIX!r} [{shape[0]}]; got "
                             f"{q.dtype} {tuple(q.shape)}")
        return {"": q, SCALE_SUFFIX: scale.float()}
    stored = {"": weights.get(key)}
    for k in [k for k in weights.keys() if k.startswith(key + ".")]:
        stored[k[len(key):]] = weights.get(k)
    n = stored[""].numel()
    if stored[""].dtype != torch.uint8 or n != (shape[0] * shape[1] + 1) // 2 or ".absmax" not in stored:
        raise ValueError(f"{where} must be packed NF4 (uint8, {(shape[0] * shape[1] + 1) // 2} bytes, with "
                         f"'.absmax' and a quant state) for a {shape} layer; got {stored[''].dtype} {n} bytes")
    return stored


def quantize_backbone(model: nn.Module, quantization: str | QuantConfig, device=None) -> nn.Module:
    """Replace the Linear layers of an already loaded backbone with quantized ones, in place; returns the model.

    `edgeprm.load(..., quantization=...)` quantizes while loading instead, without a full-precision copy.
    """
    cfg = as_quant_config(quantization)
    if cfg is None:
        return model
    first = next(model.parameters())
    transform = make_transform(cfg, device or first.device, first.dtype)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            new = transform(name, module, lambda n: model.get_parameter(n).detach())
            if new is not None:
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model


def read_manifest(model_dir: Path) -> dict | None:
    """A quantized checkpoint's `edgeprm.json` (None for a full-precision checkpoint), checked."""
    f = Path(model_dir) / MANIFEST
    if not f.is_file():
        return None
    try:
        m = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from e
    if m.get("format") != FORMAT:
        return None  # another edgeprm artifact (an ONNX bundle has its own manifest): not a quantized checkpoint
    version = m.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{f} has format_version {version!r}; this edgeprm reads quantized checkpoints up to "
                         f"version {FORMAT_VERSION}. Upgrade edgeprm, or quantize the full-precision checkpoint "
                         "again with this version")
    if m.get("quantization") not in SCHEMES or m.get("storage") != SCHEMES[m["quantization"]].storage:
        raise ValueError(f"{f}: quantization {m.get('quantization')!r} with storage {m.get('storage')!r} is not one "
                         f"of this build's schemes {tuple(SCHEMES)}")
    return m


def plan_backbone(model_dir: Path, weights, quantization, device: torch.device, compute_dtype: torch.dtype):
    """What `edgeprm.load` needs: (scheme name or None, `load_backbone` transform or None).

    A quantized checkpoint (with `edgeprm.json`) is rebuilt from its stored tensors; `quantization` must then be None
    or the same scheme (a QuantConfig may pick its kernel). Otherwise the scheme quantizes full-precision weights as
    they load.
    """
    from edgeprm.loading import backbone_prefix

    cfg = as_quant_config(quantization)
    manifest = read_manifest(model_dir)
    if manifest is None:
        if cfg is None:
            return None, None
        return cfg.scheme, make_transform(cfg, device, compute_dtype)
    stored = manifest["quantization"]
    if cfg is None:
        cfg = QuantConfig(stored, keep=tuple(manifest.get("keep", ())), embeddings=manifest.get("embeddings", "keep"))
    elif cfg.scheme != stored:
        raise ValueError(f"{model_dir} holds {stored} weights, but quantization={cfg.scheme!r} was asked for; load "
                         f"it with quantization=None (or {stored!r}), or quantize the full-precision checkpoint with "
                         f"--quantization {cfg.scheme}")
    cfg = replace(cfg, nf4_blocksize=manifest.get("nf4_blocksize", 64))  # what the stored blocks are
    return cfg.scheme, make_transform(cfg, device, compute_dtype, manifest, weights, backbone_prefix(weights))


__all__ = ["EMBEDDINGS", "KERNEL_DEVICES", "MANIFEST", "SCHEMES", "CastEmbedding", "FbgemmInt8Linear",
           "Int8Embedding", "QuantConfig", "Scheme", "as_quant_config", "build_linear", "dequantize_int8_rowwise",
           "dequantize_nf4", "make_transform", "plan_backbone", "quantize_backbone", "quantize_int8_rowwise",
           "quantize_nf4", "quantize_weight", "read_manifest"]
