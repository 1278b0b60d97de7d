"""Quantization schemes and their config (torch-free: the CLI and `ScorerConfig` validate with it).

Schemes (`QUANT_SCHEMES`; the torch backend's `quantization=` choices are built from it):

| scheme | stored as                               | kernels (`QuantConfig.kernel`)                                  |
|--------|-----------------------------------------|-----------------------------------------------------------------|
| `int8` | int8 [out, in] + an fp32 scale per row  | `fbgemm` dynamic int8 GEMM (CPU default), `bnb-int8` LLM.int8   |
|        |                                         | (`Linear8bitLt`; the CUDA default)                              |
| `int4` | bitsandbytes NF4 (blocks of 64) + state | `bnb-nf4` (`Linear4bit`, bf16 compute), `nf4-dense` (NF4 expanded |
|        | (codes rounded by GPTQ on calibration   | before a dense GEMM; the CPU default without native bf16)       |
|        | rows by default)                        |                                                                 |

What the kernels do and how weights are stored: `edgeprm.quant.modules` and `edgeprm.quant.primitives`; the
checkpoint format: `edgeprm.quant.checkpoint`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

NF4_BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)


def device_type(device) -> str:
    """'cpu' or 'cuda' (from a string like 'cuda:1' or a torch.device, without importing torch)."""
    return str(device).partition(":")[0]


@dataclass(frozen=True)
class Scheme:
    """One quantization choice: what a checkpoint stores and the kernels that run it.

    On CUDA the scheme's `cuda` kernel runs; on a CPU the fastest of its CPU kernels on this CPU, measured once
    (`edgeprm.quant.select.cpu_kernel`).
    """

    name: str
    storage: str  # the stored form: "int8" (rowwise) | "nf4"
    kernels: tuple[str, ...]  # every kernel that runs the stored form
    cuda: str
    summary: str

    @property
    def cpu_kernels(self) -> tuple[str, ...]:
        return tuple(k for k in self.kernels if "cpu" in KERNEL_DEVICES[k])


EMBEDDINGS = ("keep", "int8")
ROUNDINGS = ("gptq", "nearest")  # int4 weights: error-compensated on calibration rows, or round-to-nearest
# Where each kernel runs. fbgemm / onednn: torch's dynamic int8 GEMM on those engines; nf4-dense: NF4 expanded to the
# compute dtype before a dense GEMM (edgeprm.quant.modules.Nf4DenseLinear); bnb-*: bitsandbytes.
KERNEL_DEVICES = {"fbgemm": ("cpu",), "onednn": ("cpu",), "bnb-int8": ("cpu", "cuda"), "nf4-dense": ("cpu", "cuda"),
                  "bnb-nf4": ("cpu", "cuda")}
QUANT_SCHEMES = {
    "int8": Scheme("int8", "int8", ("fbgemm", "onednn", "bnb-int8"), "bnb-int8",
                   "int8 weights: the fastest int8 GEMM of this CPU (fbgemm or oneDNN), bitsandbytes LLM.int8 on CUDA"),
    "int4": Scheme("int4", "nf4", ("nf4-dense", "bnb-nf4"), "bnb-nf4",
                   "NF4 weights (blocks of 64): the fastest 4-bit kernel of this CPU, bitsandbytes on CUDA"),
}


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a backbone. `edgeprm.load(..., quantization=QuantConfig("int8", kernel="bnb-int8"))`.

    kernel: one of the scheme's kernels (None = its default for the device: see QUANT_SCHEMES).
    keep: fnmatch patterns of Linear names (as in the backbone, e.g. "layers.0.mlp.*") kept at full precision.
    int8_threshold: bitsandbytes LLM.int8 outlier threshold (activation columns above it run in fp16; 0 = none).
    nf4_blocksize: weights per NF4 absmax block.
    reduce_range: fbgemm 7-bit activations; None = only where the CPU's int8 dot product saturates.
    embeddings: "keep" (the checkpoint's dtype) or "int8" (rowwise int8 table).
    smooth: calibrated channel migration before quantizing (`edgeprm.quant.calibrate`): the outlier fix for int8,
        activation-aware scales for int4. Folded into the weights, so it costs nothing at run time.
    rounding: int4 weights: "gptq" rounds each layer's NF4 codes against its calibration activations, carrying each
        column's error onto the columns not yet rounded (`edgeprm.quant.gptq`); "nearest" rounds each weight alone.
    calibration: JSONL rows (the `score` schema) to calibrate on; None = a built-in set of synthetic problems.
    wide_activations: fnmatch patterns of the int8 Linear layers (fbgemm / onednn kernels) whose activations go in as
        two int8 digits per token, ~16-bit precision, in a GEMM of twice the rows (`FbgemmInt8Linear.digits`).
        Default every layer: one digit per token (8-bit) misses the GSM8K step bar (mean step |delta| 1.3e-3 against
        2 x bf16's 3.5e-4; two digits 2.6e-4, weights alone 2.5e-4), at about half the speed (4-layer 1.5B slice,
        512 tokens, AMD EPYC with AVX-512 VNNI, oneDNN: 1256 -> 650 tok/s; fp32 522 in the same run). () = one
        digit everywhere, the fast path where 8-bit activations are accurate enough.
    """

    scheme: str
    kernel: str | None = None
    keep: tuple[str, ...] = ()
    int8_threshold: float = 6.0
    nf4_blocksize: int = 64
    reduce_range: bool | None = None
    embeddings: str = "keep"
    smooth: bool = True
    rounding: str = "gptq"
    calibration: str | None = None
    wide_activations: tuple[str, ...] = ("*",)

    def __post_init__(self):
        if self.scheme not in QUANT_SCHEMES:
            raise ValueError(f"quantization must be one of {tuple(QUANT_SCHEMES)}; got {self.scheme!r}")
        if self.kernel is not None and self.kernel not in QUANT_SCHEMES[self.scheme].kernels:
            raise ValueError(f"kernel {self.kernel!r} does not run {self.scheme} weights; choose one of "
                             f"{QUANT_SCHEMES[self.scheme].kernels}")
        for field, example in (("keep", "'layers.0.*'"), ("wide_activations", "'*.down_proj'")):
            patterns = getattr(self, field)
            if isinstance(patterns, str) or not all(isinstance(k, str) for k in patterns):
                raise ValueError(f"{field} must be a tuple of module-name patterns like ({example},); got "
                                 f"{patterns!r}")
            object.__setattr__(self, field, tuple(patterns))
        if self.nf4_blocksize not in NF4_BLOCKSIZES:
            raise ValueError(f"nf4_blocksize must be one of {NF4_BLOCKSIZES}; got {self.nf4_blocksize}")
        if self.embeddings not in EMBEDDINGS:
            raise ValueError(f"embeddings must be one of {EMBEDDINGS}; got {self.embeddings!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}; got {self.rounding!r}")
        if not self.int8_threshold >= 0:
            raise ValueError(f"int8_threshold must be >= 0 (0 disables the outlier columns); got "
                             f"{self.int8_threshold}")

    @property
    def spec(self) -> Scheme:
        return QUANT_SCHEMES[self.scheme]

    def kernel_for(self, device, compute_dtype=None) -> str:
        """The kernel that runs this config on `device`: the one asked for, else the scheme's CUDA kernel, else the
        fastest CPU kernel measured on this CPU for `compute_dtype` (a torch dtype; None = float32)."""
        dev = device_type(device)
        if self.kernel is not None:
            kernel = self.kernel
        elif dev == "cuda":
            kernel = self.spec.cuda
        else:
            from edgeprm.quant.select import cpu_kernel

            kernel = cpu_kernel(self.scheme, compute_dtype)
        if dev not in KERNEL_DEVICES[kernel]:
            raise ValueError(f"the {kernel} kernel runs on {KERNEL_DEVICES[kernel]} only; got device {dev!r}. Choose "
                             f"another kernel of {self.spec.kernels} or leave kernel=None")
        return kernel

    @property
    def calibrated(self) -> bool:
        """Whether loading this config runs (or reads back) a calibration: smoothing, or GPTQ rounding of int4."""
        return self.smooth or (self.spec.storage == "nf4" and self.rounding == "gptq")

    def keeps(self, name: str) -> bool:
        return _matches(name, self.keep)

    def wide(self, name: str) -> bool:
        """Whether the int8 Linear `name` takes its activations as two int8 digits (`wide_activations`)."""
        return _matches(name, self.wide_activations)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def as_quant_config(quantization) -> QuantConfig | None:
    if quantization is None or isinstance(quantization, QuantConfig):
        return quantization
    if quantization not in QUANT_SCHEMES:
        raise ValueError(f"quantization must be None, one of {tuple(QUANT_SCHEMES)} or a QuantConfig; got "
                         f"{quantization!r}")
    return QuantConfig(quantization)

