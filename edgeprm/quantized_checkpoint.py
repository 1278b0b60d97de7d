"""Quantized checkpoints on disk: `edgeprm quantize MODEL OUT_DIR --quantization int8|int4` and `save_quantized`.

A quantized checkpoint is a PRM directory a device can load without ever holding full-precision weights:
`model.safetensors` holds each quantized Linear as its stored form (int8: `<linear>.weight` int8 [out, in] +
`<linear>.weight_scale` fp32 [out]; int4: bitsandbytes' packed NF4 `<linear>.weight` + `<linear>.weight.absmax`,
`.quant_map` and `.quant_state.bitsandbytes__nf4`, as transformers serialises them) and every other tensor as stored;
beside it sit config.json, the tokenizer and head files, and `edgeprm.json`:
{"format": "edgeprm-quantized", "format_version": 1, "quantization", "storage", "keep", "embeddings", "family",
"modules" (the quantized Linears), "bytes", "source", "versions"}. `edgeprm.load(dir)` reads the manifest
(`edgeprm.quantize.read_manifest`) and rebuilds the modules from the stored tensors (`edgeprm.quantize.make_transform`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from edgeprm.quantize import (
    EMBEDDINGS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SCALE_SUFFIX,
    SCHEMES,
    QuantConfig,
    as_quant_config,
    quantize_int8_rowwise,
    quantize_weight,
    read_manifest,
)


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
    tokenizer and head files, and `edgeprm.json` (format version, scheme, quantized modules, package versions).
    Tensors are quantized one at a time: peak memory is the quantized checkpoint plus one layer. The directory is
    written beside `out_dir` and renamed into place when complete.
    """
    from safetensors.torch import save_file
    from transformers import AutoModel

    from edgeprm.families import Family, parse_family
    from edgeprm.loading import (
        HUB_PATTERNS,
        SafetensorsCheckpoint,
        backbone_prefix,
        build_backbone_config,
        detect_family,
        read_config,
        resolve_model_dir,
    )
    from edgeprm.scorer import default_model_dir

    cfg = as_quant_config(quantization)
    if cfg is None:
        raise ValueError(f"save_quantized needs a scheme, one of {tuple(SCHEMES)}; got None")
    src = default_model_dir() if model is None else resolve_model_dir(model, revision)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} already exists and is not empty; choose a new directory or pass --overwrite")
    if out.exists() and out.resolve() == src.resolve():
        raise ValueError(f"the output directory {out} is the source checkpoint; choose a new directory")
    held = read_manifest(src)
    if held is not None:
        raise ValueError(f"{src} is already a quantized checkpoint ({held['quantization']}); quantize the full-"
                         "precision checkpoint instead")
    config, weights = read_config(src), SafetensorsCheckpoint(src)
    if not weights:
        raise FileNotFoundError(f"{src} has no *.safetensors weights to quantize")
    fam = parse_family(family) if family is not None else detect_family(src, config, weights)
    with torch.device("meta"):
        meta = AutoModel.from_config(build_backbone_config(config))
    prefix = backbone_prefix(weights)
    linears = {n: m for n, m in meta.named_modules() if isinstance(m, nn.Linear) and not cfg.keeps(n)}
    tables = {n for n, m in meta.named_modules() if isinstance(m, nn.Embedding)} if cfg.embeddings == "int8" else set()
    if tables and fam is Family.TOKEN_PROB and "lm_head.weight" not in weights:
        raise ValueError(f"{src} is a token-prob PRM whose good/bad rows come from its tied embedding table, which "
                         "must stay full precision; quantize it with embeddings='keep' (--embeddings keep)")
    absent = [prefix + n + ".weight" for n in linears if prefix + n + ".weight" not in weights]
    if absent:
        raise ValueError(f"{src}: backbone tensors {absent[:3]} are missing from {weights.files()}")
    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(weights.keys()):
        if key.startswith("lm_head.") and fam is not Family.TOKEN_PROB:
            continue  # only a token-prob PRM reads (two rows of) its LM head
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
            for suffix, v in quantize_weight(cfg.spec.storage, t, cfg.nf4_blocksize).items():
                tensors[key + suffix] = v.contiguous()
        else:
            tensors[key] = t.contiguous()
        del t
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "edgeprm": cfg.scheme})
        skip = {"model.safetensors.index.json", MANIFEST}
        for f in sorted(src.iterdir()):
            if (f.is_file() and f.name not in skip and not f.name.endswith(".safetensors")
                    and any(fnmatch.fnmatchcase(f.name, p) for p in HUB_PATTERNS)):
                shutil.copy2(f, tmp / f.name)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "quantization": cfg.scheme,
            "storage": cfg.spec.storage,
            **({"nf4_blocksize": cfg.nf4_blocksize} if cfg.spec.storage == "nf4" else {}),
            "keep": list(cfg.keep),
            "embeddings": cfg.embeddings,
            "family": fam.value,
            "modules": sorted(linears),
            "bytes": sum(v.numel() * v.element_size() for v in tensors.values()),
            "source": str(src),
            "versions": package_versions(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cmd_quantize(args) -> int:
    import sys

    out = save_quantized(args.model, args.out_dir, QuantConfig(args.quantization, keep=tuple(args.keep),
                                                               embeddings=args.embeddings),
                         family=args.family, overwrite=args.overwrite)
    m = read_manifest(out)
    size = (out / "model.safetensors").stat().st_size
    print(f"edgeprm: {len(m['modules'])} Linear layers -> {m['quantization']} ({m['storage']}), "
          f"model.safetensors {size / 2**20:.1f} MiB -> {out}", file=sys.stderr)
    return 0


def add_quantize_parser(sub) -> None:
    from edgeprm.families import FAMILIES

    p = sub.add_parser("quantize", help="write an 8-bit or 4-bit checkpoint of a PRM",
                       description="Quantize the backbone's Linear layers of a full-precision PRM checkpoint and write "
                                   "a checkpoint that `edgeprm.load(OUT_DIR)` / `edgeprm score --model OUT_DIR` load "
                                   "without ever holding full-precision weights.")
    p.add_argument("model", help="full-precision checkpoint directory or hub id")
    p.add_argument("out_dir", help="directory to write (must not exist or be empty, unless --overwrite)")
    p.add_argument("--quantization", required=True, choices=tuple(SCHEMES),
                   help="; ".join(f"{k}: {v.summary}" for k, v in SCHEMES.items()))
    p.add_argument("--keep", action="append", default=[], metavar="PATTERN",
                   help="Linear layers to keep at full precision (fnmatch on backbone names, e.g. 'layers.0.*'); "
                        "repeatable")
    p.add_argument("--embeddings", choices=EMBEDDINGS, default="keep",
                   help="keep the embedding table as stored (default) or store it as int8 rows")
    p.add_argument("--family", choices=FAMILIES, default=None, help="override the detected PRM family")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.set_defaults(func=cmd_quantize)
