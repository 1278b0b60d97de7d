"""`ScorerConfig`: every option of `edgeprm.load`, in one frozen, validated place (torch-free).

`edgeprm.load(model, **options)` builds one and hands it to the chosen backend; the CLI builds one from its flags
(`edgeprm.cli.options`). Values are checked here, before any file is read: a wrong value, or an option the chosen
backend does not have, is a `ValueError` that names the option, what came, and what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from edgeprm.aggregation import AGGREGATIONS
from edgeprm.families import REGISTRY, parse_family
from edgeprm.quant.config import QUANT_SCHEMES, QuantConfig
from edgeprm.trajectory import DEFAULT_SPLIT

BACKENDS = ("torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"
DTYPES = ("float32", "bfloat16", "float16")  # torch compute dtypes ("auto": bf16 on CUDA, fp32 on CPU)
PADDING_SIDES = ("left", "right")
TORCH_QUANTIZATIONS = (None, *QUANT_SCHEMES)
BUNDLE_SCHEMES = ("none", *QUANT_SCHEMES)  # an ONNX bundle's weights; "none" = fp32
# Options only one backend has: setting one for the other backend is an error that names it.
# Options of one family (token-prob's step tag and token pair): an error for a model of another family.
FAMILY_OPTIONS = tuple(dict.fromkeys(n for f in REGISTRY.values() for n in f.option_names))
BACKEND_ONLY = {"dtype": "torch", "revision": "torch", "threads": "onnx", "chunk_tokens": "torch",
                "share_prefix": "torch"}
_UNSUPPORTED_WHY = {
    "dtype": "an ONNX bundle computes in the precision it was exported with (pick a bundle instead)",
    "revision": "an ONNX bundle is a local directory (export the revision you want)",
    "threads": "the torch backend uses torch's own thread pool (call torch.set_num_threads)",
    "chunk_tokens": "an ONNX bundle runs each batch in one call (it has no KV cache inputs yet)",
    "share_prefix": "an ONNX bundle runs each batch in one call (it has no KV cache inputs yet)",
}


def _dtype_name(dtype) -> str:
    """'auto', a dtype name, or a torch.dtype (named without importing torch)."""
    if dtype is None:
        return "auto"
    text = str(dtype)
    return text.removeprefix("torch.") if text.startswith("torch.") else text


@dataclass(frozen=True)
class ScorerConfig:
    """How to load and run a scorer. Field by field:

    quantization: None | "int8" | "int4" | a QuantConfig (torch); None | "none" | "int8" | "int4" (onnx, must match
        the bundle). backend: "torch" | "onnx". device: "auto" | "cpu" | "cuda" | "cuda:N".
    family: force a PRM family instead of detecting it. dtype (torch): "auto" | "float32" | "bfloat16" | "float16".
    aggregation: how `score` combines the rewards (None = the family's default); alpha: weight of the trajectory
        reward in "reasonflux". max_length: token limit (None = the model's); truncate: score what fits.
    split: separator of a solution string's steps. step_tag, good_token, bad_token: token-prob options.
    token_budget: padded tokens per forward batch; max_batch_size: trajectories per batch; padding_side.
    revision (torch): hub revision. threads (onnx): onnxruntime intra-op threads (None = one per core).
    chunk_tokens (torch): sequences longer than this are prefilled in chunks of this many tokens, so that peak
        activation memory stays bounded (None = 1024 on CPU, 4096 on GPU; 0 = never chunk).
    share_prefix (torch): candidates of one problem compute their shared prompt once (None = on).
    """

    quantization: str | QuantConfig | None = None
    backend: str = "torch"
    device: str = "auto"
    family: str | None = None
    dtype: str = "auto"
    aggregation: str | None = None
    alpha: float = 1.0
    max_length: int | None = None
    truncate: bool = False
    split: str = DEFAULT_SPLIT
    step_tag: str | None = None
    good_token: str | None = None
    bad_token: str | None = None
    token_budget: int = 8192
    max_batch_size: int = 32
    padding_side: str = "right"
    revision: str | None = None
    threads: int | None = None
    chunk_tokens: int | None = None
    share_prefix: bool | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {self.backend!r}")
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        object.__setattr__(self, "device", str(self.device))
        for name, owner in BACKEND_ONLY.items():
            value = getattr(self, name)
            if owner != self.backend and value not in (None, "auto"):
                raise ValueError(f"{name}={value!r} is an option of the {owner} backend, not of backend="
                                 f"{self.backend!r}: {_UNSUPPORTED_WHY[name]}; drop {name}=")
        self._check_quantization()
        kind, _, index = self.device.partition(":")
        if kind not in DEVICES or (index and not (kind == "cuda" and index.isdigit())):
            raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'); got {self.device!r}")
        if self.family is not None:
            object.__setattr__(self, "family", parse_family(self.family).value)
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES} or 'auto'; got {self.dtype!r}")
        if self.aggregation is not None and self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}; got {self.aggregation!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number; got {self.alpha!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ValueError(f"max_length must be positive; got {self.max_length}")
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"the step separator (split) must be a non-empty string; got {self.split!r}")
        for name in FAMILY_OPTIONS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string or None; got {value!r}")
        if not (isinstance(self.token_budget, int) and isinstance(self.max_batch_size, int)
                and self.token_budget >= 1 and self.max_batch_size >= 1):
            raise ValueError(f"token_budget and max_batch_size must be positive; got {self.token_budget}, "
                             f"{self.max_batch_size}")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}; got {self.padding_side!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None; got {self.threads!r}")
        if self.chunk_tokens is not None and (isinstance(self.chunk_tokens, bool) or not isinstance(
                self.chunk_tokens, int) or self.chunk_tokens < 0):
            raise ValueError(f"chunk_tokens must be a non-negative integer (0 = never chunk) or None; got "
                             f"{self.chunk_tokens!r}")
        if self.share_prefix is not None and not isinstance(self.share_prefix, bool):
            raise ValueError(f"share_prefix must be True, False or None; got {self.share_prefix!r}")

    def _check_quantization(self) -> None:
        q = self.quantization
        if self.backend == "torch":
            if not (q is None or isinstance(q, QuantConfig) or q in QUANT_SCHEMES):
                raise ValueError(f"quantization must be one of {TORCH_QUANTIZATIONS} or a QuantConfig; got {q!r}")
        elif isinstance(q, QuantConfig) or (q is not None and q not in BUNDLE_SCHEMES):
            raise ValueError(f"quantization must be None or one of {BUNDLE_SCHEMES} for an ONNX bundle (export "
                             f"with `edgeprm export MODEL OUT_DIR --quantization ...`); got {q!r}")

    @classmethod
    def from_options(cls, **options) -> ScorerConfig:
        """Build from keyword options, naming any unknown one (`edgeprm.load`'s keywords)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                             f"edgeprm.load takes {', '.join(sorted(known))}")
        return cls(**options)

    def family_options(self, family) -> dict:
        """The family options that were set, checked against the family's declaration (a PRMFamily)."""
        given = {n: getattr(self, n) for n in FAMILY_OPTIONS if getattr(self, n) is not None}
        foreign = [n for n in given if n not in family.option_names]
        if foreign:
            owners = sorted({str(f) for f in REGISTRY.values() if set(foreign) & set(f.option_names)})
            raise ValueError(f"{', '.join(foreign)} {'is an option' if len(foreign) == 1 else 'are options'} of "
                             f"{' and '.join(owners)} PRMs; this model is a {family} PRM: drop "
                             f"{', '.join(n + '=' for n in foreign)}")
        return given

    def replace(self, **changes) -> ScorerConfig:
        return replace(self, **changes)

    def to_options(self) -> dict:
        """Every field as a keyword of `edgeprm.load` (a QuantConfig stays a QuantConfig)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


ScorerConfig.DEFAULTS = {f.name: f.default for f in fields(ScorerConfig)}

