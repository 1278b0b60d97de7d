"""End-to-end ONNX benchmark: a random value-head PRM of the exact Qwen2.5-1.5B shape, torch vs ONNX Runtime.

Builds the checkpoint on disk (hidden 1536, 28 layers, 12 heads / 2 KV heads, intermediate 8960, vocab 151,936,
tied embeddings; bf16 safetensors + reward_head.pt), exports it once to fp32 ONNX (external data), quantizes that
bundle to int8 and int4, and scores the same ~512-token trajectories (one per forward, as a CPU user would) with:
torch fp32, torch bf16 (`edgeprm.load(dir, dtype="bfloat16")`), and ONNX Runtime fp32 / int8 / int4.

The checkpoint build, every export and every scorer run in fresh subprocesses, so each peak RSS (VmHWM) is its own.
The table: size on disk, export time and peak RSS, load time, peak RSS while scoring, tokens/s, speed relative to
torch bf16, and fidelity to torch fp32 (max / mean |delta| of step rewards, Spearman of scores, whether the
best trajectory is the same), computed with `edgeprm.eval.parity`.

    python bench/bench_onnx.py                    # the full 1.5B shape (~15 GB RAM for the fp32 export; ~30 min)
    python bench/bench_onnx.py --layers 4         # a 4-layer slice of the same shape: a quick check
    python bench/bench_onnx.py --layers 4 --int4-levels 0,1,4   # int4 accuracy levels side by side

Nothing here asserts a time. The ONNX workers never import torch: their RSS is the torch-free runtime's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QWEN25_15B = {"hidden_size": 1536, "num_layers": 28, "num_heads": 12, "num_kv_heads": 2, "intermediate_size": 8960,
              "vocab_size": 151_936, "max_position_embeddings": 32768, "tie_word_embeddings": True}
WORDS = ("the step so we have total each then answer is of to and a number sum product difference left remaining "
         "ducks eggs per day sells market dollars she bakes friends muffins price cost apples boxes").split()


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark. /proc's VmHWM starts afresh at exec; ru_maxrss would carry
    over the forking parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes on macOS


def dir_mib(path: Path, files=None) -> float:
    paths = [path / f for f in files] if files is not None else [p for p in path.iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in paths) / 2**20


# -- the checkpoint -----------------------------------------------------------------------------------------------
def build_checkpoint(out: Path, layers: int, seed: int = 0) -> Path:
    """A value-head PRM of the 1.5B shape with `layers` layers, random bf16 weights written tensor by tensor
    (the scaling of `edgeprm.testing.checkpoints.random_backbone_state`, without materialising an fp32 model)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    from edgeprm.testing.checkpoints import build_tokenizer, tiny_qwen2_config

    if (out / "reward_head.pt").is_file():
        return out
    shape = {**QWEN25_15B, "num_layers": layers}
    build_tokenizer(out, seed=seed)  # a small tokenizer: ids < 640 of the 151,936-row embedding
    config = tiny_qwen2_config(**shape)
    with torch.device("meta"):
        meta = Qwen2Model(Qwen2Config.from_dict(config))
    g = torch.Generator().manual_seed(seed)
    std = 0.5
    tensors = {}
    for name, p in meta.state_dict().items():
        if name.endswith("norm.weight") or "layernorm" in name:
            t = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif name.endswith("embed_tokens.weight"):
            t = std * torch.randn(p.shape, generator=g)
        elif name.endswith("inv_freq"):
            continue
        else:
            t = torch.randn(p.shape, generator=g) * (std / p.shape[-1] ** 0.5)
        tensors[f"model.{name}"] = t.to(torch.bfloat16)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    (out / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}, indent=2))
    h = shape["hidden_size"]
    head = {"weight": torch.randn(1, h, generator=g) * (2.0 / h**0.5), "bias": torch.randn(1, generator=g)}
    torch.save(head, out / "reward_head.pt")
    return out


def trajectories(tokenizer_dir: Path, n: int, tokens: int, seed: int = 0) -> list[dict]:
    """n value-head trajectories of about `tokens` tokens each (steps added until the next would overshoot)."""
    from edgeprm.encoding import Encoder
    from edgeprm.families import Family
    from edgeprm.tokenizer import PRMTokenizer
    from edgeprm.trajectory import Trajectory

    enc = Encoder(Family.VALUE_HEAD, PRMTokenizer.from_dir(tokenizer_dir), 10**9)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        problem = f"Problem {i}: " + " ".join(rng.choice(WORDS) for _ in range(30)) + "?"
        steps: list[str] = []
        while True:
            step = f"Step {len(steps) + 1}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
            step += f" {rng.randint(1, 999)} + {rng.randint(1, 99)}."
            if steps and len(enc.encode(Trajectory(problem, [*steps, step])).ids) > tokens:
                break
            steps.append(step)
        out.append({"id": str(i), "problem": problem, "steps": steps})
    return out


# -- workers (each in its own process) ---------------------------------------------------------------------------
def worker_export(source: str, out: str, scheme: str, block_size: int, accuracy_level: int, method: str) -> dict:
    from edgeprm.export.onnx import ExportConfig, bundle_size, export

    t0 = time.perf_counter()
    export(source, out, ExportConfig(scheme, block_size, accuracy_level, int8_method=method))
    return {"export_s": time.perf_counter() - t0, "export_rss_mib": peak_rss_mib(),
            "size_mib": bundle_size(out) / 2**20}


def worker_score(kind: str, path: str, rows_file: str, threads: int | None) -> dict:
    import edgeprm

    rows = json.loads(Path(rows_file).read_text())
    t0 = time.perf_counter()
    if kind.startswith("torch"):
        import torch

        if threads:
            torch.set_num_threads(threads)
        scorer = edgeprm.load(path, device="cpu", dtype=kind.split("-")[1], token_budget=1)
    else:
        scorer = edgeprm.load(path, backend="onnx", device="cpu", threads=threads, token_budget=1)
    load_s = time.perf_counter() - t0
    load_rss = peak_rss_mib()
    scorer.score_batch(rows[:1])  # warm-up: first-call allocations, ORT's lazy kernel choices
    t0 = time.perf_counter()
    results = scorer.score_batch(rows)  # token_budget=1: one trajectory per forward
    dt = time.perf_counter() - t0
    tokens = sum(r.num_tokens for r in results)
    return {"load_s": load_s, "load_rss_mib": load_rss, "rss_mib": peak_rss_mib(), "tok_s": tokens / dt,
            "tokens": tokens, "seconds": dt, "torch_imported": "torch" in sys.modules,
            "results": [r.to_dict() for r in results]}


def run_worker(args: list[str], log) -> dict:
    cmd = [sys.executable, __file__, "--worker", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        log(f"  FAILED ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    what = {"build": args[1:2], "export": args[2:4], "score": args[1:3]}[args[0]]
    log(f"  {args[0]} {' '.join(Path(w).name for w in what)}: {time.perf_counter() - t0:.0f} s")
    return out


# -- the table ---------------------------------------------------------------------------------------------------
def fidelity_to(reference: list[dict], results: list[dict]) -> dict:
    """Step |delta|, Spearman of scores and whether the best trajectory is the same, via `edgeprm.eval.parity`."""
    from edgeprm.eval.parity import compare

    report = compare(reference, results)  # no problem text in these rows: the trajectories form one group
    return {"max_delta": report.step_max_abs, "mean_delta": report.step_mean_abs, "spearman": report.spearman,
            "top1": report.top1_agreement}


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=QWEN25_15B["num_layers"], help="layers of the 1.5B shape to keep")
    p.add_argument("--tokens", type=int, default=512, help="tokens per trajectory (about)")
    p.add_argument("--trajectories", type=int, default=6, help="trajectories scored (one per forward)")
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--int4-levels", default="0", help="comma-separated int4 accuracy levels to export and time")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every core)")
    p.add_argument("--work-dir", default=None, help="keep checkpoint and bundles here (reused when present)")
    p.add_argument("--skip-torch-fp32", action="store_true", help="leave out the torch fp32 row")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        mode, *rest = args.worker
        if mode == "build":
            out = {"dir": str(build_checkpoint(Path(rest[0]), int(rest[1]))), "build_rss_mib": peak_rss_mib()}
        elif mode == "export":
            out = worker_export(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]), rest[5])
        else:
            out = worker_score(rest[0], rest[1], rest[2], int(rest[3]) or None)
        print(json.dumps(out))
        return

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="edgeprm-bench-onnx-"))
    work.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    label = "Qwen2.5-1.5B shape" if args.layers == QWEN25_15B["num_layers"] else \
        f"{args.layers}-layer slice of the Qwen2.5-1.5B shape"
    log(f"{label}, value-head PRM, work dir {work}")
    t0 = time.perf_counter()
    ckpt = Path(run_worker(["build", str(work / f"ckpt-L{args.layers}"), str(args.layers)], log)["dir"])
    log(f"  checkpoint: {time.perf_counter() - t0:.0f} s, {dir_mib(ckpt):.0f} MiB")
    rows = trajectories(ckpt, args.trajectories, args.tokens)
    rows_file = work / f"rows-{args.tokens}-{args.trajectories}.json"
    rows_file.write_text(json.dumps(rows))

    levels = [int(x) for x in args.int4_levels.split(",") if x.strip()]
    bundles = {"onnx fp32": ("none", 0, "nbits"), f"onnx int8 b{args.block_size} acc4": ("int8", 4, "nbits"),
               "onnx int8 dynamic": ("int8", 0, "dynamic")}
    bundles.update({f"onnx int4 b{args.block_size} acc{lv}": ("int4", lv, "nbits") for lv in levels})
    exports = {}
    fp32_dir = work / f"onnx-L{args.layers}-fp32"
    for name, (scheme, level, method) in bundles.items():
        out = fp32_dir if scheme == "none" else \
            work / f"onnx-L{args.layers}-{scheme}-{method}-b{args.block_size}-a{level}"
        source = ckpt if scheme == "none" else fp32_dir
        from edgeprm.backends.onnx import BUNDLE_FILE

        if (out / BUNDLE_FILE).is_file():
            from edgeprm.export.onnx import bundle_size

            exports[name] = {"size_mib": bundle_size(out) / 2**20, "reused": True, "dir": out}
            continue
        exports[name] = {**run_worker(["export", str(source), str(out), scheme, str(args.block_size), str(level),
                                       method], log), "dir": out}

    configs = {}
    if not args.skip_torch_fp32:
        configs["torch fp32"] = ("torch-float32", ckpt)
    configs["torch bf16"] = ("torch-bfloat16", ckpt)
    configs.update({name: ("onnx", e["dir"]) for name, e in exports.items() if "error" not in e})
    runs = {name: run_worker(["score", kind, str(path), str(rows_file), str(args.threads or 0)], log)
            for name, (kind, path) in configs.items()}

    reference = runs.get("torch fp32", {}).get("results") or runs.get("onnx fp32", {}).get("results")
    ref_name = "torch fp32" if "results" in runs.get("torch fp32", {}) else "onnx fp32"
    bf16 = runs.get("torch bf16", {}).get("tok_s")
    ckpt_mib = dir_mib(ckpt, ["model.safetensors", "reward_head.pt"])
    tokens = runs.get("torch bf16", {}).get("tokens")
    print(f"\n{label}: value-head PRM, {args.trajectories} trajectories, {tokens} tokens (~{args.tokens} each, one per "
          f"forward), threads={args.threads or os.cpu_count()}; fidelity vs {ref_name}\n")
    head = ("| config | size on disk MiB | export s | export peak RSS MiB | load s | peak RSS MiB | tokens/s "
            "| vs torch bf16 | step max abs delta | step mean abs delta | Spearman | same best |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, r in runs.items():
        e = exports.get(name, {})
        size = e.get("size_mib", ckpt_mib if name.startswith("torch") else None)
        if "error" in r:
            print(f"| {name} | {fmt(size, '.0f')} | failed: {r['error'][:80]} |")
            continue
        fid = fidelity_to(reference, r["results"]) if reference else {}
        print(f"| {name} | {fmt(size, '.0f')} | {fmt(e.get('export_s'), '.0f')} "
              f"| {fmt(e.get('export_rss_mib'), '.0f')} | {r['load_s']:.1f} | {r['rss_mib']:.0f} | {r['tok_s']:.0f} | "
              f"{fmt(r['tok_s'] / bf16 if bf16 else None, '.2f')}x | {fmt(fid.get('max_delta'), '.2e')} "
              f"| {fmt(fid.get('mean_delta'), '.2e')} | {fmt(fid.get('spearman'), '.3f')} "
              f"| {fmt(fid.get('top1'), '.0f')} |")
    onnx_torch = [n for n, r in runs.items() if n.startswith("onnx") and r.get("torch_imported")]
    if onnx_torch:
        print(f"\nnote: torch was imported in {onnx_torch} (it should not be)")
    print("\nsize on disk: torch rows = the bf16 safetensors checkpoint; onnx rows = graph + external weights. "
          "export rows for int8/int4 = quantizing the fp32 bundle (no re-trace).")


if __name__ == "__main__":
    main()
