"""8/4-bit scorers: memory and speed at the exact Qwen2.5-1.5B shape, per-kernel speed and error, GSM8K fidelity.

    python bench/bench_quant.py memory    [--dir D] [--fp32] [--tokens 512]   peak RSS + tok/s, fresh process each
    python bench/bench_quant.py kernels   [--layers 4] [--tokens 512]         per-kernel table on a layer slice
    python bench/bench_quant.py calibrate [--dir D] [--rows 16]             calibration time + peak RSS at 1.5B
    python bench/bench_quant.py fidelity  [--model M] [--data gsm8k|heldout] [--problems N] [--out D]
                                          Best-of-4 parity vs fp32 on GSM8K or the demo PRM's held-out set

`memory` writes a random value-head PRM of the ReasonFlux-PRM-1.5B shape (hidden 1536, 28 layers, 12 heads / 2 KV
heads, intermediate 8960, vocab 151,936, tied embeddings; bf16 safetensors, ~3.1 GB, plus reward_head.pt and a small
tokenizer) and its `edgeprm quantize` int8/int4 checkpoints under --dir (kept for reruns), then for each config loads
it and scores one --tokens trajectory in a fresh process (`edgeprm.backends.memory.measure_peak_rss`): peak RSS is that
process's high-water mark, interpreter and imports included. `kernels` runs the same shape cut to --layers layers
in this process: tokens/s of one prefill and the error of the final hidden states against fp32 (random weights: the
hidden-state error is meaningful, score ranks are not). `fidelity` scores the GSM8K Best-of-4 rows
(../shared/data/gsm8k_model_solutions.jsonl) with the trained PRM (the bundled demo PRM by default) in fp32 and with
each quantized path (and the int8-embedding-table variants), writes the score files and prints `edgeprm parity`'s
table against the bars; `--data heldout` does the same on the demo PRM's held-out synthetic problems. Prints tables;
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import edgeprm  # noqa: E402
from edgeprm.backends.memory import format_bytes, measure_peak_rss, weight_bytes  # noqa: E402
from edgeprm.quant.config import QuantConfig  # noqa: E402

QWEN_1P5B = dict(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960,
                 max_position_embeddings=32768, tie_word_embeddings=True)
VOCAB = 151_936
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_model_solutions.jsonl"
# (label, quantization, dtype): the configs `kernels` and `fidelity` compare.
PATHS = [("fp32", None, "float32"), ("bf16", None, "bfloat16"), ("int8 fbgemm", QuantConfig("int8", "fbgemm"), "auto"),
         ("int8 onednn", QuantConfig("int8", "onednn"), "auto"), ("int8 bnb", QuantConfig("int8", "bnb-int8"), "auto"),
         ("int4 nf4-dense", QuantConfig("int4", "nf4-dense"), "auto"),
         ("int4 nf4", QuantConfig("int4", "bnb-nf4"), "auto")]
# `kernels` also runs NF4 with the rest of the model (norms, attention math, residual stream) in bf16.
KERNEL_PATHS = [*PATHS, ("int4 nf4, bf16", QuantConfig("int4", "bnb-nf4"), "bfloat16"),
                ("int4 nf4-dense, bf16", QuantConfig("int4", "nf4-dense"), "bfloat16")]
# `fidelity` also runs the int8 embedding table (the option that brings the 1.5B peak RSS under the goals).
FIDELITY_PATHS = [*PATHS, ("int8 fbgemm, int8 emb", QuantConfig("int8", "fbgemm", embeddings="int8"), "auto"),
                  ("int4 nf4, int8 emb", QuantConfig("int4", "bnb-nf4", embeddings="int8"), "auto")]


def write_random_value_head(out: Path, layers: int, seed: int = 0) -> Path:
    """A random value-head PRM of the 1.5B shape with `layers` layers (`edgeprm.perf.shapes`)."""
    from edgeprm.perf.shapes import write_random_value_head as write

    return write(out, "qwen2.5-1.5b", layers, seed)


def cmd_memory(args) -> None:
    from edgeprm.quant.checkpoint import read_manifest, save_quantized

    root = Path(args.dir)
    src = write_random_value_head(root / "qwen2.5-1.5b-shape.bf16", 28)
    stored = {}
    for q, emb in (("int8", "keep"), ("int4", "keep"), ("int8", "int8"), ("int4", "int8")):
        name = q if emb == "keep" else f"{q}.emb-int8"
        stored[name] = root / f"qwen2.5-1.5b-shape.{name}"
        if not stored[name].is_dir() or read_manifest(stored[name]) is None:
            t = time.perf_counter()
            save_quantized(src, stored[name], QuantConfig(q, embeddings=emb), overwrite=True)
            print(f"wrote {stored[name].name} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    configs = [("bf16", src, None, "bfloat16"),
               ("int8 (from bf16 ckpt)", src, "int8", "auto"), ("int4 (from bf16 ckpt)", src, "int4", "auto"),
               ("int8 (edgeprm quantize)", stored["int8"], None, "auto"),
               ("int4 (edgeprm quantize)", stored["int4"], None, "auto"),
               ("int8, int8 embeddings", stored["int8.emb-int8"], None, "auto"),
               ("int4, int8 embeddings", stored["int4.emb-int8"], None, "auto")]
    if args.fp32:
        configs.insert(0, ("fp32", src, None, "float32"))
    head = (f"{'config':26} {'peak RSS':>10} {'(GB)':>6} {'after import':>12} {'after load':>10} {'weights':>10} "
            f"{'load s':>7} {'1st call s':>10} {'tok/s':>7}")
    print(f"value-head PRM, Qwen2.5-1.5B shape (random weights), one {args.tokens}-token trajectory, "
          f"{torch.get_num_threads()} threads, each config in a fresh process (peak = VmHWM; the embedding table "
          f"is read whole after loading, as a real vocabulary would touch it)\n\n{head}\n{'-' * len(head)}")
    for label, model, q, dtype in configs:
        r = measure_peak_rss(model, q, tokens=args.tokens, repeats=2, resident_embeddings=True, device="cpu",
                             dtype=dtype)
        print(f"{label:26} {format_bytes(r['peak_rss']):>10} {r['peak_rss'] / 1e9:6.2f} "
              f"{format_bytes(r['import_rss']):>12} "
              f"{format_bytes(r['load_rss']):>10} {format_bytes(r['weight_bytes']['total']):>10} "
              f"{r['load_s']:7.1f} {r['first_score_s']:10.1f} {r['tokens_per_s']:7.0f}", flush=True)
        if args.json:
            print(json.dumps({"config": label, **r}), file=sys.stderr)
    for d in stored.values():
        print(f"{d.name}/model.safetensors: {format_bytes((d / 'model.safetensors').stat().st_size)}")


CALIBRATE_CHILD = """
import json, resource, sys, time
from edgeprm.quant.calibrate import calibrate, read_rows
rows, record = read_rows(None, int(sys.argv[3]))
t = time.perf_counter()
grid = sys.argv[4] if len(sys.argv) > 4 else "nf4"
s = calibrate(sys.argv[1], rows, sys.argv[2], record, progress=False, grid=grid, blocksize=64 if grid == "nf4" else 32)
sec = time.perf_counter() - t
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": sec, "peak_rss": hwm, "tokens": s.record["tokens"], "groups": len(s.alphas),
                  "full_precision": list(s.sensitive()), "rounded": len(s.rounded)}))
"""


def cmd_calibrate(args) -> None:
    """The calibrated smoothing of int8 and int4 at the exact 1.5B shape, each in a fresh process: time and peak RSS
    (the stream holds one full-precision layer and the calibration activations, never the model)."""
    import subprocess

    src = write_random_value_head(Path(args.dir) / "qwen2.5-1.5b-shape.bf16", 28)
    print(f"calibration of the Qwen2.5-1.5B shape (random weights, bf16 checkpoint {format_bytes(dir_bytes(src))}), "
          f"{args.rows} built-in rows, {torch.get_num_threads()} threads, fresh process each\n")
    print(f"{'scheme':22} {'tokens':>7} {'groups':>7} {'GPTQ':>5} {'seconds':>8} {'peak RSS':>10}  "
          "kept at full precision (int8)")
    # int4: AWQ smoothing + GPTQ rounding (the defaults), on NF4 (torch) and on MatMulNBits' int4 (ONNX export)
    for label, scheme, grid in (("int8 smoothquant", "int8", "nf4"), ("int4 awq+gptq nf4", "int4", "nf4"),
                                ("int4 awq+gptq onnx b32", "int4", "matmulnbits"))[args.skip:]:
        out = subprocess.run([sys.executable, "-c", CALIBRATE_CHILD, str(src), scheme, str(args.rows), grid],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        kept = ", ".join(r["full_precision"]) if scheme == "int8" else "-"
        print(f"{label:22} {r['tokens']:7d} {r['groups']:7d} {r['rounded']:5d} {r['seconds']:8.1f} "
              f"{format_bytes(r['peak_rss']):>10}  {kept or '-'}", flush=True)


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (bitsandbytes repacks NF4 for its CPU kernel on the first call)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cmd_kernels(args) -> None:
    root = Path(args.dir)
    src = write_random_value_head(root / f"qwen2.5-1.5b-shape.{args.layers}layers.bf16", args.layers)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 640, (1, args.tokens), generator=g)
    mask = torch.ones_like(ids)
    ref = None
    head = f"{'config':14} {'tok/s':>7} {'vs bf16':>8} {'max |dh|/max |h|':>17} {'SQNR dB':>8} {'Linear bytes':>13}"
    print(f"{args.layers} layers of the Qwen2.5-1.5B shape (random weights), one {args.tokens}-token prefill, "
          f"{torch.get_num_threads()} threads; errors of the final hidden states vs fp32\n\n{head}\n{'-' * len(head)}")
    rows = []
    for label, q, dtype in KERNEL_PATHS:
        s = edgeprm.load(src, quantization=q, device="cpu", dtype=dtype)
        h = s.hidden_states(ids, mask).float()
        sec = _time(lambda s=s: s.hidden_states(ids, mask), args.repeats)
        wb = weight_bytes(s)
        if ref is None:
            ref = h
        err = (h - ref).abs().max().item() / ref.abs().max().item()
        sqnr = 10 * torch.log10(ref.pow(2).mean() / (h - ref).pow(2).mean().clamp(min=1e-30)).item()
        rows.append((label, args.tokens / sec, err, sqnr, wb["attention"] + wb["mlp"]))
        del s
    bf16 = next(r[1] for r in rows if r[0] == "bf16")
    for label, tps, err, sqnr, nbytes in rows:
        sq = "exact" if label == "fp32" else f"{sqnr:8.1f}"
        print(f"{label:14} {tps:7.0f} {tps / bf16:7.2f}x {err:17.4f} {sq:>8} {format_bytes(nbytes):>13}")


def cmd_fidelity(args) -> None:
    from edgeprm.datasets import gsm8k_rows
    from edgeprm.eval.fidelity import Variant, format_rows, measure, verdicts
    from edgeprm.testing.outliers import add_activation_outliers

    model = Path(args.model) if args.model else Path(edgeprm.__file__).parent / "assets" / "demo-prm"
    if not (model / "config.json").is_file():
        sys.exit(f"no trained PRM at {model}; pass --model DIR (the bars need a trained model)")
    if args.data == "gsm8k":
        if not GSM8K.is_file():
            sys.exit(f"{GSM8K} is missing")
        rows = [r for r in gsm8k_rows(GSM8K) if args.problems is None or int(r["group"]) < args.problems]
    else:
        from edgeprm.demo.evaluate import HELDOUT_SEED
        from edgeprm.demo.synthetic import generate

        rows = [{**r, "group": r["problem_id"]} for r in generate(args.problems or 500, seed=HELDOUT_SEED)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stress:
        model = add_activation_outliers(model, out / f"{model.name}.stress{args.stress:g}", factor=args.stress)
    variants = [Variant("bf16", dtype="bfloat16"),
                Variant("int8 plain", quantization=QuantConfig("int8", smooth=False)),
                Variant("int8 (default)", quantization=QuantConfig("int8")),
                Variant("int4 NF4 plain", quantization=QuantConfig("int4", smooth=False, rounding="nearest")),
                Variant("int4 AWQ, nearest", quantization=QuantConfig("int4", rounding="nearest")),
                Variant("int4 GPTQ, no AWQ", quantization=QuantConfig("int4", smooth=False)),
                Variant("int4 (default)", quantization=QuantConfig("int4")),
                Variant("int4 (default) nf4-dense", quantization=QuantConfig("int4", "nf4-dense")),
                Variant("onnx int8 plain", backend="onnx", quantization="int8", export={"smooth": False}),
                Variant("onnx int8", backend="onnx", quantization="int8"),
                Variant("onnx int4", backend="onnx", quantization="int4")]
    reports = measure(model, rows, variants, out, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"model: {model}\ndata: {args.data}, {len(rows)} rows ({len({r['group'] for r in rows})} problems); "
          f"decisive = fp32's two best candidates differ by more than 0.01\n")
    print(format_rows(reports))
    print()
    for label, failures in verdicts(reports, variants).items():
        print(f"{label}: {'meets its bar' if not failures else 'misses: ' + '; '.join(failures)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    default_dir = os.environ.get("EDGEPRM_BENCH_DIR", "/tmp/edgeprm-bench")
    m = sub.add_parser("memory")
    m.add_argument("--dir", default=default_dir)
    m.add_argument("--tokens", type=int, default=512)
    m.add_argument("--fp32", action="store_true", help="also fp32 (6.7 GB)")
    m.add_argument("--json", action="store_true", help="also each measurement as JSON on stderr")
    c = sub.add_parser("calibrate")
    c.add_argument("--dir", default=default_dir)
    c.add_argument("--rows", type=int, default=16)
    c.add_argument("--skip", type=int, default=0, help="skip the first N rows of the table (int8, int4 nf4)")
    k = sub.add_parser("kernels")
    k.add_argument("--dir", default=default_dir)
    k.add_argument("--layers", type=int, default=4)
    k.add_argument("--tokens", type=int, default=512)
    k.add_argument("--repeats", type=int, default=3)
    f = sub.add_parser("fidelity")
    f.add_argument("--model", default=None, help="trained PRM directory (default: edgeprm/assets/demo-prm)")
    f.add_argument("--data", choices=("gsm8k", "heldout"), default="gsm8k")
    f.add_argument("--problems", type=int, default=None,
                   help="first N problems only (default: GSM8K all 1,319; held-out 500)")
    f.add_argument("--stress", type=float, default=0, metavar="K",
                   help="the outlier stress model of the PRM: 4 channels per projection input K times larger")
    f.add_argument("--out", default=os.path.join(default_dir, "fidelity"))
    args = ap.parse_args()
    {"memory": cmd_memory, "calibrate": cmd_calibrate, "kernels": cmd_kernels, "fidelity": cmd_fidelity}[args.cmd](args)


if __name__ == "__main__":
    main()
