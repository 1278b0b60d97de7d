"""`edgeprm bench [--model M | --shape qwen2.5-1.5b --layers 4] [--tokens 512]`: every backend x quantization this
machine has, side by side on one model, with a recommendation (`edgeprm.perf.runner`)."""

from __future__ import annotations

import json
from pathlib import Path


def run(args) -> int:
    from edgeprm.perf.runner import run as bench

    work = Path(args.work_dir or Path.home() / ".cache" / "edgeprm" / "bench")
    out = bench(Path(args.model) if args.model else None, args.shape, args.layers, args.tokens, args.trajectories,
                args.repeats, work, peers=args.peers, onnx=not args.no_onnx, only=args.only,
                max_mean_delta=args.max_mean_delta, min_spearman=args.min_spearman)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def add_arguments(p) -> None:
    from edgeprm.perf.shapes import SHAPES

    p.description = ("Loads the model once per config in a fresh process (torch fp32/bf16, each int8 and int4 kernel, "
                     "ONNX fp32/int8/int4) and prints tok/s, peak RSS and fidelity to fp32 side by side, with the CPU "
                     "features found and the fastest config within the fidelity bound.")
    p.add_argument("--model", default=None, help="a checkpoint directory (default: a random model of --shape)")
    p.add_argument("--shape", choices=tuple(SHAPES), default="qwen2.5-1.5b", help="shape of the random model")
    p.add_argument("--layers", type=int, default=4, help="layers of the random model (0 = all of the shape)")
    p.add_argument("--tokens", type=int, default=512, help="tokens per trajectory (about)")
    p.add_argument("--trajectories", type=int, default=4, help="trajectories scored, one per forward")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per config (the best counts)")
    p.add_argument("--only", nargs="+", default=None, metavar="CONFIG",
                   help="configs or backends to run (e.g. torch onnx 'torch int8 onednn')")
    p.add_argument("--peers", action="store_true", help="also transformers' recipe and llama.cpp (llama-cpp-python)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime configs")
    p.add_argument("--max-mean-delta", type=float, default=0.01, help="fidelity bound: step mean |delta| vs fp32")
    p.add_argument("--min-spearman", type=float, default=0.98, help="fidelity bound: Spearman of step rewards")
    p.add_argument("--work-dir", default=None, help="random model, bundles and GGUF files (default ~/.cache/edgeprm)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
