"""Quantized checkpoints on disk: their manifest, `save_quantized` (`edgeprm quantize`), and loading them back.

A quantized checkpoint is a PRM directory a device can load without ever holding full-precision weights:
`model.safetensors` holds each quantized Linear as its stored form (int8: `<linear>.weight` int8 [out, in] +
`<linear>.weight_scale` fp32 [out]; int4: bitsandbytes' packed NF4 `<linear>.weight` + `<linear>.weight.absmax`,
`.quant_map` and `.quant_state.bitsandbytes__nf4`, as transformers serialises them) and every other tensor the
scorer reads, as stored; beside it sit config.json, the tokenizer and head files, and the manifest
`edgeprm-quantized.json` (`QuantManifest`: format, format_version, quantization, storage, keep, embeddings, family,
modules (the quantized Linears), bytes, source, versions). Checkpoints written before the manifest had its own name
carry it as `edgeprm.json`; they still load. `edgeprm.load(dir)` reads the manifest and rebuilds the modules from
the stored tensors (`plan_backbone` -> `edgeprm.quant.modules.make_transform`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from edgeprm.quant.config import QUANT_SCHEMES, QuantConfig, as_quant_config
from edgeprm.quant.modules import make_transform
from edgeprm.quant.primitives import SCALE_SUFFIX, quantize_int8_rowwise, quantize_weight

QUANT_FORMAT = "edgeprm-quantized"
QUANT_FORMAT_VERSION = 1
QUANT_MANIFEST = QUANT_FORMAT + ".json"
LEGACY_MANIFEST = "edgeprm.json"  # the manifest's name before it had its own (an ONNX bundle's is edgeprm.json too)


@dataclass(frozen=True)
class QuantManifest:
    """What a quantized checkpoint holds; writes and reads itself (`write`, `read`), checking its format version."""

    quantization: str
    storage: str
    family: str
    modules: tuple[str, ...]
    keep: tuple[str, ...] = ()
    embeddings: str = "keep"
    nf4_blocksize: int | None = None
    bytes: int = 0
    source: str = ""
    versions: dict = field(default_factory=dict)
    calibration: dict | None = None  # the smoothing folded into the stored weights (edgeprm.quant.calibrate)
    format_version: int = QUANT_FORMAT_VERSION

    def __post_init__(self):
        scheme = QUANT_SCHEMES.get(self.quantization)
        if scheme is None or self.storage != scheme.storage:
            raise ValueError(f"quantization {self.quantization!r} with storage {self.storage!r} is not one of this "
                             f"build's schemes {tuple(QUANT_SCHEMES)}")
        object.__setattr__(self, "modules", tuple(self.modules))
        object.__setattr__(self, "keep", tuple(self.keep))

    def to_dict(self) -> dict:
        d = {"format": QUANT_FORMAT, **asdict(self)}
        d["modules"], d["keep"] = list(self.modules), list(self.keep)
        if d["nf4_blocksize"] is None:
            del d["nf4_blocksize"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, m: dict, where: str = "manifest") -> QuantManifest:
        version = m.get("format_version")
        if not isinstance(version, int) or version > QUANT_FORMAT_VERSION:
            raise ValueError(f"{where} has format_version {version!r}; this edgeprm reads quantized checkpoints up "
                             f"to version {QUANT_FORMAT_VERSION}. Upgrade edgeprm, or quantize the full-precision "
                             "checkpoint again with this version")
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in m.items() if k in known})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    def write(self, model_dir: Path) -> Path:
        path = Path(model_dir) / QUANT_MANIFEST
        path.write_text(self.to_json())
        return path

    @classmethod
    def read(cls, model_dir: Path) -> QuantManifest | None:
        """The manifest of a quantized checkpoint; None for a full-precision one (or another edgeprm artifact)."""
        for name in (QUANT_MANIFEST, LEGACY_MANIFEST):
            f = Path(model_dir) / name
            if not f.is_file():
                continue
            try:
                m = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{f} is not valid JSON: {e}") from e
            if isinstance(m, dict) and m.get("format") == QUANT_FORMAT:
                return cls.from_dict(m, str(f))
        return None


def read_manifest(model_dir: Path) -> QuantManifest | None:
    return QuantManifest.read(model_dir)


@dataclass(frozen=True)
class StoredCheckpoint:
    """A quantized checkpoint's manifest and tensors, as `make_transform` reads them."""

    manifest: QuantManifest
    weights: object  # edgeprm.loading.SafetensorsCheckpoint
    prefix: str  # of the backbone's keys ("model." or "")

    def read(self, name: str, storage: str, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """One module's stored tensors ({suffix: tensor}, as `quantize_weight` gives them), checked against its
        shape."""
        weights, key = self.weights, self.prefix + name
        where = f"{weights.model_dir}: quantized tensor {key!r}"
        if key not in weights:
            raise ValueError(f"{where} is missing; the checkpoint does not match its {QUANT_MANIFEST}. Quantize the "
                             "full-precision checkpoint again with `edgeprm quantize`")
        if storage == "int8":
            q, scale = weights.get(key), weights.get(key + SCALE_SUFFIX) if key + SCALE_SUFFIX in weights else None
            if q.dtype != torch.int8 or tuple(q.shape) != shape or scale is None or tuple(scale.shape) != shape[:1]:
                raise ValueError(f"{where} must be int8 {shape} with an fp32 {key + SCALE_SUFFIX!r} [{shape[0]}]; "
                                 f"got {q.dtype} {tuple(q.shape)}")
            return {"": q, SCALE_SUFFIX: scale.float()}
        stored = {"": weights.get(key)}
        for k in [k for k in weights.keys() if k.startswith(key + ".")]:
            stored[k[len(key):]] = weights.get(k)
        n = stored[""].numel()
        if stored[""].dtype != torch.uint8 or n != (shape[0] * shape[1] + 1) // 2 or ".absmax" not in stored:
            raise ValueError(f"{where} must be packed NF4 (uint8, {(shape[0] * shape[1] + 1) // 2} bytes, with "
                             f"'.absmax' and a quant state) for a {shape} layer; got {stored[''].dtype} {n} bytes")
        return stored


def plan_backbone(model_dir: Path, weights, quantization, device: torch.device, compute_dtype: torch.dtype):
    """What `edgeprm.load` needs: (scheme name or None, `load_backbone` transform or None, the weights to read).

    A quantized checkpoint (with its manifest) is rebuilt from its stored tensors; `quantization` must then be None
    or the same scheme (a QuantConfig may pick its kernel). Otherwise the scheme quantizes full-precision weights as
    they load, after calibrated smoothing (`QuantConfig.smooth`): the weights to read are then the smoothed view.
    """
    cfg = as_quant_config(quantization)
    manifest = read_manifest(model_dir)
    if manifest is None:
        if cfg is None:
            return None, None, weights
        smoothing = None
        if cfg.calibrated:
            from edgeprm.quant.calibrate import SmoothedCheckpoint, for_config

            smoothing = for_config(model_dir, cfg)
            weights = SmoothedCheckpoint(weights, smoothing)
            cfg = replace(cfg, keep=cfg.keep + smoothing.sensitive())
        return cfg.scheme, make_transform(cfg, device, compute_dtype, calibrated=smoothing), weights
    stored = manifest.quantization
    if cfg is None:
        cfg = QuantConfig(stored, keep=manifest.keep, embeddings=manifest.embeddings)
    elif cfg.scheme != stored:
        raise ValueError(f"{model_dir} holds {stored} weights, but quantization={cfg.scheme!r} was asked for; load "
                         f"it with quantization=None (or {stored!r}), or quantize the full-precision checkpoint with "
                         f"--quantization {cfg.scheme}")
    cfg = replace(cfg, nf4_blocksize=manifest.nf4_blocksize or 64)  # what the stored blocks are
    return cfg.scheme, make_transform(cfg, device, compute_dtype,
                                      StoredCheckpoint(manifest, weights, weights.backbone_prefix)), weights


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("edgeprm", "torch", "bitsandbytes", "safetensors", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def save_quantized(model, out_dir, quantization: str | QuantConfig, *, family: str | None = None,
                   revision: str | None = None, overwrite: bool = False) -> Path:
    """Write a quantized checkpoint of `model` (a full-precision PRM directory or hub id; None = the default).

    `out_dir` gets `model.safetensors` (the quantized Linear weights with their scales or NF4 quant state, every
    other tensor as stored; a step-classifier's or value-head's unused `lm_head` is left out), `config.json`, the
    tokenizer and head files, and its `QuantManifest` (format version, scheme, quantized modules, package versions).
    Tensors are quantized one at a time: peak memory is the quantized checkpoint plus one layer. The directory is
    written beside `out_dir` and renamed into place when complete.
    """
    from safetensors.torch import save_file
    from transformers import AutoModel

    from edgeprm.families import detect_family, get_family
    from edgeprm.loading import (
        HUB_PATTERNS,
        SafetensorsCheckpoint,
        build_backbone_config,
        default_model_dir,
        read_config,
        resolve_model_dir,
    )

    cfg = as_quant_config(quantization)
    if cfg is None:
        raise ValueError(f"save_quantized needs a scheme, one of {tuple(QUANT_SCHEMES)}; got None")
    src = default_model_dir() if model is None else resolve_model_dir(model, revision)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} already exists and is not empty; choose a new directory or pass --overwrite")
    if out.exists() and out.resolve() == src.resolve():
        raise ValueError(f"the output directory {out} is the source checkpoint; choose a new directory")
    held = read_manifest(src)
    if held is not None:
        raise ValueError(f"{src} is already a quantized checkpoint ({held.quantization}); quantize the full-"
                         "precision checkpoint instead")
    config, weights = read_config(src), SafetensorsCheckpoint(src)
    calibration = smoothing = None
    if cfg.calibrated and weights:
        from edgeprm.quant.calibrate import SmoothedCheckpoint, for_config

        smoothing = for_config(src, cfg)
        weights, calibration = SmoothedCheckpoint(weights, smoothing), smoothing.to_record()
        cfg = replace(cfg, keep=cfg.keep + smoothing.sensitive())
    if not weights:
        raise FileNotFoundError(f"{src} has no *.safetensors weights to quantize")
    fam = get_family(family) if family is not None else detect_family(src, config, weights)
    head_keys = set(fam.head_tensor_keys(config, weights))
    with torch.device("meta"):
        meta = AutoModel.from_config(build_backbone_config(config))
    prefix = weights.backbone_prefix
    linears = {n: m for n, m in meta.named_modules() if isinstance(m, nn.Linear) and not cfg.keeps(n)}
    tables = {n for n, m in meta.named_modules() if isinstance(m, nn.Embedding)} if cfg.embeddings == "int8" else set()
    if any(prefix + t + ".weight" in head_keys for t in tables):
        raise ValueError(f"{src} is a {fam} PRM whose head reads rows of its tied embedding table, which must stay "
                         "full precision; quantize it with embeddings='keep' (--embeddings keep)")
    absent = [prefix + n + ".weight" for n in linears if prefix + n + ".weight" not in weights]
    if absent:
        raise ValueError(f"{src}: backbone tensors {absent[:3]} are missing from {weights.files()}")
    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(weights.keys()):
        if key.startswith("lm_head.") and key not in head_keys:
            continue  # an LM head the family's head does not read (a token-prob PRM reads two of its rows)
        t = weights.get(key)
        owner = key[len(prefix):].rpartition(".")[0] if key.startswith(prefix) else None
        if owner in tables and key.endswith(".weight"):
            q, scale = quantize_int8_rowwise(t)
            tensors[key], tensors[key + SCALE_SUFFIX] = q, scale
        elif owner in linears and key.endswith(".weight"):
            m = linears[owner]
            if tuple(t.shape) != (m.out_features, m.in_features):
                raise ValueError(f"{src}: tensor {key!r} has shape {tuple(t.shape)}, config.json implies "
                                 f"{(m.out_features, m.in_features)}")
            stored = smoothing.stored(owner, cfg.spec.storage, cfg.nf4_blocksize) if smoothing is not None else None
            if stored is None:
                stored = quantize_weight(cfg.spec.storage, t, cfg.nf4_blocksize)
            for suffix, v in stored.items():
                tensors[key + suffix] = v.contiguous()
        else:
            tensors[key] = t.contiguous()
        del t
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "edgeprm": cfg.scheme})
        skip = {"model.safetensors.index.json", QUANT_MANIFEST, LEGACY_MANIFEST}
        for f in sorted(src.iterdir()):
            if (f.is_file() and f.name not in skip and not f.name.endswith(".safetensors")
                    and any(fnmatch.fnmatchcase(f.name, p) for p in HUB_PATTERNS)):
                shutil.copy2(f, tmp / f.name)
        QuantManifest(
            quantization=cfg.scheme, storage=cfg.spec.storage, family=str(fam), modules=tuple(sorted(linears)),
            keep=cfg.keep, embeddings=cfg.embeddings,
            nf4_blocksize=cfg.nf4_blocksize if cfg.spec.storage == "nf4" else None,
            bytes=sum(v.numel() * v.element_size() for v in tensors.values()), source=str(src),
            versions=package_versions(), calibration=calibration).write(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
