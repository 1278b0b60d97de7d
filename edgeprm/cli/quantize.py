"""`edgeprm quantize MODEL OUT_DIR --quantization int8|int4`: write a quantized checkpoint
(`edgeprm.quant.checkpoint.save_quantized`)."""

from __future__ import annotations

import sys

from edgeprm.families import FAMILIES
from edgeprm.quant.config import EMBEDDINGS, QUANT_SCHEMES, ROUNDINGS, QuantConfig


def run(args) -> int:
    from edgeprm.quant.checkpoint import read_manifest, save_quantized

    cfg = QuantConfig(args.quantization, keep=tuple(args.keep), embeddings=args.embeddings,
                      smooth=not args.no_smooth, rounding=args.rounding, calibration=args.calibration)
    out = save_quantized(args.model, args.out_dir, cfg, family=args.family, overwrite=args.overwrite)
    m = read_manifest(out)
    size = (out / "model.safetensors").stat().st_size
    print(f"edgeprm: {len(m.modules)} Linear layers -> {m.quantization} ({m.storage}), "
          f"model.safetensors {size / 2**20:.1f} MiB -> {out}", file=sys.stderr)
    return 0


def add_arguments(p) -> None:
    p.description = ("Quantize the backbone's Linear layers of a full-precision PRM checkpoint and write a checkpoint "
                     "that `edgeprm.load(OUT_DIR)` / `edgeprm score --model OUT_DIR` load without ever holding "
                     "full-precision weights.")
    p.add_argument("model", help="full-precision checkpoint directory or hub id")
    p.add_argument("out_dir", help="directory to write (must not exist or be empty, unless --overwrite)")
    p.add_argument("--quantization", required=True, choices=tuple(QUANT_SCHEMES),
                   help="; ".join(f"{k}: {v.summary}" for k, v in QUANT_SCHEMES.items()))
    p.add_argument("--keep", action="append", default=[], metavar="PATTERN",
                   help="Linear layers to keep at full precision (fnmatch on backbone names, e.g. 'layers.0.*'); "
                        "repeatable")
    p.add_argument("--embeddings", choices=EMBEDDINGS, default="keep",
                   help="keep the embedding table as stored (default) or store it as int8 rows")
    p.add_argument("--calibration", metavar="FILE.jsonl", default=None,
                   help="trajectories to calibrate the channel smoothing on (rows in the `score` schema; default: a "
                        "built-in set of synthetic problems); recorded in the manifest")
    p.add_argument("--no-smooth", action="store_true",
                   help="plain rounding: no calibrated channel smoothing (int8 then breaks on activation outliers)")
    p.add_argument("--rounding", choices=ROUNDINGS, default="gptq",
                   help="int4: gptq (default) rounds each layer's NF4 codes against its calibration activations, "
                        "carrying each column's error onto the columns not yet rounded; nearest rounds each weight "
                        "alone")
    p.add_argument("--family", choices=FAMILIES, default=None, help="override the detected PRM family")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
