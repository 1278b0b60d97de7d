"""`edgeprm export MODEL OUT_DIR [--quantization none|int8|int4]`: write an ONNX bundle (`edgeprm.export.onnx`)."""

from __future__ import annotations

import sys

from edgeprm.config import BUNDLE_SCHEMES
from edgeprm.families import FAMILIES


def run(args) -> int:
    from edgeprm.export.onnx import ExportConfig, bundle_size, export

    config = ExportConfig(args.quantization, args.block_size, args.accuracy_level, int8_method=args.int8_method,
                          smooth=not args.no_smooth, calibration=args.calibration, rounding=args.rounding)
    options = {k: v for k, v in (("family", args.family), ("max_length", args.max_length)) if v is not None}
    out = export(args.model, args.out_dir, config, **options)
    mb = bundle_size(out) / 2**20
    print(f"edgeprm: exported {args.model} ({config.quantization}) to {out / config.graph} ({mb:.1f} MiB); score "
          f"with edgeprm.load({str(out)!r}, backend='onnx') or `edgeprm score ... --backend onnx --model {out}`",
          file=sys.stderr)
    return 0


def add_arguments(p) -> None:
    from edgeprm.export.onnx import ACCURACY_LEVELS, DEFAULT_BLOCK_SIZE, INT8_METHODS
    from edgeprm.quant.config import ROUNDINGS

    p.description = ("One graph = backbone + step gather + reward head + normalisation; the bundle holds it, the "
                     "tokenizer and edgeprm.json. Score it with --backend onnx.")
    p.add_argument("model", help="checkpoint directory or hub id, or an fp32 bundle to quantize")
    p.add_argument("out_dir", help="bundle directory (created; an earlier bundle there is replaced)")
    p.add_argument("--quantization", choices=BUNDLE_SCHEMES, default="none",
                   help="none = fp32 weights; int8 = 8-bit MatMulNBits blocks (or quantize_dynamic, see "
                        "--int8-method); int4 = 4-bit MatMulNBits blocks")
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="int8/int4 block size along K")
    p.add_argument("--accuracy-level", type=int, choices=ACCURACY_LEVELS, default=None,
                   help="MatMulNBits compute: 0 unset (fp32 on CPU), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations "
                        "(fastest, least faithful); default 0 for int4, 4 for int8")
    p.add_argument("--int8-method", choices=INT8_METHODS, default="nbits",
                   help="int8: nbits = MatMulNBits 8-bit blocks (default, most faithful); dynamic = "
                        "onnxruntime's quantize_dynamic (one activation scale per tensor)")
    p.add_argument("--calibration", metavar="FILE.jsonl", default=None,
                   help="int8/int4 from a checkpoint: trajectories to calibrate the channel smoothing on (default: a "
                        "built-in set); quantizing an fp32 bundle cannot smooth")
    p.add_argument("--no-smooth", action="store_true", help="plain rounding, no calibrated channel smoothing")
    p.add_argument("--rounding", choices=ROUNDINGS, default="gptq",
                   help="int4 from a checkpoint: gptq = the 4-bit codes rounded against the calibration trajectories' "
                        "Hessians (default); nearest = onnxruntime's round-to-nearest. An fp32 bundle rounds to "
                        "nearest")
    p.add_argument("--family", choices=FAMILIES, default=None, help="override the detected PRM family")
    p.add_argument("--max-length", type=int, default=None, help="token limit recorded in the bundle")
