"""`edgeprm bench`: every way this machine can run a PRM, measured side by side on the user's model.

For each config (torch fp32 / bf16 / each int8 and int4 kernel this CPU has; ONNX Runtime fp32 / int8 / int4 when
installed; with `peers=True` also transformers' own recipe and llama.cpp on the same weights) one fresh process
loads the model and scores the same trajectories (about `tokens` tokens each, one per forward, as a CPU user scores
them). It reports tokens/s (best of `repeats`), peak RSS (that process's VmHWM: interpreter and imports included),
load time, and fidelity to torch fp32 over every step reward (mean and max |delta|, Spearman). The recommendation is
the fastest edgeprm config within the fidelity bound.

The model is a checkpoint directory, or a random model of a real shape (`edgeprm.perf.shapes`) written once into the
work directory. ONNX bundles and GGUF files are built once there and reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BenchConfig:
    label: str
    backend: str  # "torch" | "onnx" | "transformers" | "llama.cpp"
    quantization: str | None = None  # torch: "int8" | "int4"; onnx: "none" | "int8" | "int4"; llama.cpp: a GGUF type
    kernel: str | None = None  # torch: quantization kernel, or "mkl" | "onednn" for fp32; onnx int8: the method
    dtype: str = "auto"
    peer: bool = False  # not edgeprm: never recommended


@dataclass
class BenchResult:
    config: BenchConfig
    tokens_per_s: float | None = None
    peak_rss: int | None = None
    load_s: float | None = None
    kernel: str | None = None
    step_rewards: list[list[float]] = field(default_factory=list)
    error: str | None = None
    mean_delta: float | None = None
    max_delta: float | None = None
    spearman: float | None = None


def configs(peers: bool = False, onnx: bool = True) -> list[BenchConfig]:
    """The configs this machine can run (kernels whose libraries are installed)."""
    from edgeprm.kernels.cpu_linear import available as onednn_fp32
    from edgeprm.quant.config import QUANT_SCHEMES
    from edgeprm.quant.select import available

    out = [BenchConfig("torch fp32", "torch", dtype="float32")]
    if onednn_fp32():  # the engine the auto choice did not take is shown too: "torch fp32" says which one ran
        out.append(BenchConfig("torch fp32 mkl", "torch", dtype="float32", kernel="mkl"))
    out.append(BenchConfig("torch bf16", "torch", dtype="bfloat16"))
    for scheme in ("int8", "int4"):
        for kernel in QUANT_SCHEMES[scheme].cpu_kernels:
            if available(kernel):
                out.append(BenchConfig(f"torch {scheme} {kernel}", "torch", scheme, kernel))
    if onnx and _importable("onnxruntime") and _importable("onnxscript"):
        out += [BenchConfig("onnx fp32", "onnx", "none"), BenchConfig("onnx int8", "onnx", "int8", "nbits"),
                BenchConfig("onnx int8 dynamic", "onnx", "int8", "dynamic"), BenchConfig("onnx int4", "onnx", "int4")]
    if peers:
        out += [BenchConfig("transformers fp32", "transformers", dtype="float32", peer=True),
                BenchConfig("transformers bf16", "transformers", dtype="bfloat16", peer=True)]
        if _importable("llama_cpp") and _importable("gguf"):
            out += [BenchConfig(f"llama.cpp {k}", "llama.cpp", k, peer=True) for k in ("F16", "Q8_0", "Q4_K_M")]
        else:
            import warnings

            warnings.warn("llama.cpp peers skipped: they need `pip install llama-cpp-python gguf`", stacklevel=2)
    return out


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _peak_rss() -> int:
    from edgeprm.backends.memory import _peak_rss

    return _peak_rss()


def trajectory_rows(tokenizer_dir: Path, n: int, tokens: int) -> list[dict]:
    """n arithmetic trajectories of about `tokens` tokens each in this model's tokenizer (steps added until the next
    would overshoot), different from each other."""
    from edgeprm.encoding import Encoder
    from edgeprm.families import get_family
    from edgeprm.tokenizer import PRMTokenizer
    from edgeprm.trajectory import Trajectory

    enc = Encoder(get_family("value-head"), PRMTokenizer.from_dir(tokenizer_dir), 10**9)
    rows = []
    for i in range(n):
        problem = f"Problem {i}: a shop sells {12 + i} boxes of {7 + i} apples a day. How many in {3 + i} weeks?"
        steps: list[str] = []
        while True:
            k = len(steps)
            step = f"Step {k + 1}: {12 + i + k} * {k % 9 + 2} = {(12 + i + k) * (k % 9 + 2)}, so we add it up."
            if steps and len(enc.encode(Trajectory(problem, [*steps, step])).ids) > tokens:
                break
            steps.append(step)
        rows.append({"id": str(i), "problem": problem, "steps": steps})
    return rows


# -- one config, in its own process ------------------------------------------------------------------------------
def _worker(spec: dict) -> dict:
    cfg = BenchConfig(**spec["config"])
    model, rows, repeats = spec["model"], spec["rows"], spec["repeats"]
    t0 = time.perf_counter()
    kernel = None
    if cfg.backend in ("torch", "onnx"):
        import edgeprm
        from edgeprm.quant.config import QuantConfig

        q = QuantConfig(cfg.quantization, cfg.kernel) if cfg.backend == "torch" and cfg.quantization else \
            cfg.quantization
        opts = {"dtype": cfg.dtype} if cfg.backend == "torch" else {}
        if cfg.backend == "torch" and cfg.quantization is None and cfg.kernel:
            os.environ["EDGEPRM_FP32_GEMM"] = cfg.kernel
        scorer = edgeprm.load(model, quantization=q, backend=cfg.backend, device="cpu", **opts)
        kernel = getattr(scorer, "quant_kernel", None) or getattr(scorer, "fp32_gemm", None)
        if cfg.backend == "onnx":
            kernel = cfg.kernel

        def run():
            return [r.step_rewards for r in (scorer.score_batch([row])[0] for row in rows)]

        tokens = sum(len(scorer.prepare(r).encoded.ids) for r in rows)
    else:
        run, tokens = _peer_runner(cfg, model, rows, spec)
    load_s = time.perf_counter() - t0
    rewards = run()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return {"tokens_per_s": tokens / best, "peak_rss": _peak_rss(), "load_s": load_s, "kernel": kernel,
            "step_rewards": rewards}


def _encoder_and_head(model: str):
    """edgeprm's encoder and fp32 reward head for the checkpoint at `model`, read as `edgeprm.load` reads them,
    without its backbone."""
    import torch

    from edgeprm.encoding import Encoder
    from edgeprm.loading import SafetensorsCheckpoint, read_config

    model = Path(model)
    encoder, config = Encoder.from_checkpoint(model), read_config(model)
    head = encoder.declaration.load_head(model, config, SafetensorsCheckpoint(model), encoder.tokenizer,
                                         encoder.options, config["hidden_size"])
    return encoder, head.to(dtype=torch.float32)


def _peer_runner(cfg: BenchConfig, model: str, rows: list[dict], spec: dict):
    """(run, tokens) for a peer: transformers' recipe or llama.cpp, edgeprm's head on their hidden states."""
    import torch

    from edgeprm.kernels.step_head import head_rewards_ref
    from edgeprm.trajectory import as_trajectory

    # The encoding and the head are edgeprm's (the same ids and positions); only the backbone is the peer's, and
    # edgeprm's is never loaded: the peer's peak RSS is its own.
    encoder, head = _encoder_and_head(model)
    encoded = [encoder.encode(as_trajectory(r, encoder.split)) for r in rows]
    tokens = sum(len(e.ids) for e in encoded)
    if cfg.backend == "transformers":
        from transformers import AutoModel

        dtype = torch.float32 if cfg.dtype == "float32" else torch.bfloat16
        backbone = AutoModel.from_pretrained(model, dtype=dtype).eval()

        def hidden(ids):
            with torch.inference_mode():
                return backbone(input_ids=torch.tensor([ids])).last_hidden_state[0].float()
    else:
        from edgeprm.perf.gguf import LlamaCppBackbone

        llm = LlamaCppBackbone(spec["gguf"][cfg.quantization], threads=torch.get_num_threads(),
                               n_ctx=max(len(e.ids) for e in encoded) + 16)

        def hidden(ids):
            return torch.from_numpy(llm.hidden_states(list(ids)))

    def run():
        return [head_rewards_ref(hidden(e.ids)[list(e.step_positions)], head).tolist() for e in encoded]

    return run, tokens


def run_config(cfg: BenchConfig, model: Path, rows: list[dict], repeats: int, extra: dict | None = None,
               timeout: float = 3600) -> BenchResult:
    spec = {"config": asdict(cfg), "model": str(model), "rows": rows, "repeats": repeats, **(extra or {})}
    code = ("import json, sys; from edgeprm.perf.runner import _worker; "
            "print(json.dumps(_worker(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        return BenchResult(cfg, error=(proc.stderr.strip().splitlines() or ["failed"])[-1][:200])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return BenchResult(cfg, out["tokens_per_s"], out["peak_rss"], out["load_s"], out["kernel"], out["step_rewards"])


# -- artifacts ---------------------------------------------------------------------------------------------------
def prepare_artifacts(model: Path, work: Path, wanted: list[BenchConfig], log=print) -> dict:
    """Build (or reuse) what the configs need: ONNX bundles, GGUF files. Returns
    {"onnx": {(scheme, int8 method | None): dir}, "gguf": {type: path}}."""
    out: dict = {"onnx": {}, "gguf": {}}
    schemes = {(c.quantization, c.kernel) for c in wanted if c.backend == "onnx"}
    if schemes:
        from edgeprm.backends.onnx import BUNDLE_FILE
        from edgeprm.export.onnx import ExportConfig

        fp32 = work / "onnx-fp32"
        # fp32 first when it is wanted (its trace is then reused by the quantized exports); not exported otherwise
        for scheme, method in sorted(schemes, key=lambda s: (s != ("none", None), str(s))):
            dst = fp32 if scheme == "none" else work / "-".join(["onnx", scheme, *([method] if method else [])])
            if not (dst / BUNDLE_FILE).is_file():
                t = time.perf_counter()
                # From the checkpoint, as a user exports: a quantized bundle gets the calibration (smoothing, and
                # for int4 GPTQ rounding) that quantizing the fp32 bundle cannot give it.
                _export_in_subprocess(model, dst, ExportConfig(scheme, int8_method=method or "nbits"))
                log(f"  exported {dst.name} in {time.perf_counter() - t:.0f} s")
            out["onnx"][scheme, method] = dst
    kinds = {c.quantization for c in wanted if c.backend == "llama.cpp"}
    if kinds:
        from edgeprm.perf.gguf import quantize_gguf, write_gguf

        f16 = work / "model.F16.gguf"
        if not f16.is_file():
            write_gguf(model, f16)
        out["gguf"]["F16"] = f16
        for k in sorted(kinds - {"F16"}):
            dst = work / f"model.{k}.gguf"
            if not dst.is_file():
                quantize_gguf(f16, dst, k)
            out["gguf"][k] = dst
    return out


def _export_in_subprocess(src: Path, dst: Path, cfg) -> None:
    code = ("import sys; from edgeprm.export.onnx import ExportConfig, export; "
            f"export(sys.argv[1], sys.argv[2], ExportConfig({cfg.quantization!r}, int8_method={cfg.int8_method!r}))")
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"exporting {src} -> {dst} failed:\n{proc.stderr[-2000:]}")


# -- the whole run -----------------------------------------------------------------------------------------------
def fidelity(results: list[BenchResult]) -> None:
    """Fill mean / max |delta| and Spearman of step rewards against the torch fp32 result."""
    from edgeprm.stats import spearman

    ref = next((r for r in results if r.config.label == "torch fp32" and r.error is None), None)
    if ref is None:
        return
    flat_ref = [x for row in ref.step_rewards for x in row]
    for r in results:
        if r.error is not None or len(r.step_rewards) != len(ref.step_rewards):
            continue
        flat = [x for row in r.step_rewards for x in row]
        if len(flat) != len(flat_ref):
            continue
        d = [abs(a - b) for a, b in zip(flat, flat_ref)]
        r.mean_delta, r.max_delta = sum(d) / len(d), max(d)
        r.spearman = spearman(flat, flat_ref)


def recommend(results: list[BenchResult], max_mean_delta: float, min_spearman: float) -> BenchResult | None:
    ok = [r for r in results if r.error is None and not r.config.peer and r.mean_delta is not None
          and r.mean_delta <= max_mean_delta and (r.spearman or 0) >= min_spearman]
    return max(ok, key=lambda r: r.tokens_per_s, default=None)


def format_table(results: list[BenchResult], best: BenchResult | None) -> str:
    fp32 = next((r.tokens_per_s for r in results if r.config.label == "torch fp32" and r.tokens_per_s), None)
    head = (f"{'config':22} {'kernel':10} {'tok/s':>8} {'vs fp32':>8} {'peak RSS':>10} {'load s':>7} "
            f"{'step mean|d|':>12} {'max|d|':>8} {'Spearman':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        mark = "  <- recommended" if r is best else ""
        if r.error is not None:
            lines.append(f"{r.config.label:22} failed: {r.error}")
            continue
        vs = f"{r.tokens_per_s / fp32:7.2f}x" if fp32 else "-"
        fid = (f"{r.mean_delta:12.2e} {r.max_delta:8.2e} {r.spearman:8.4f}" if r.mean_delta is not None
               else f"{'-':>12} {'-':>8} {'-':>8}")
        lines.append(f"{r.config.label:22} {r.kernel or '-':10} {r.tokens_per_s:8.0f} {vs:>8} "
                     f"{r.peak_rss / 2**30:8.2f} G {r.load_s:7.1f} {fid}{mark}")
    return "\n".join(lines)


def run(model: Path | None, shape: str, layers: int | None, tokens: int, trajectories: int, repeats: int,
        work: Path, peers: bool = False, onnx: bool = True, only: list[str] | None = None,
        max_mean_delta: float = 0.01, min_spearman: float = 0.98, log=print) -> dict:
    """Measure every config and print the table; returns {"results": [...], "recommended": label | None}."""
    import torch

    from edgeprm.hardware import cpu_info, gpu_info

    work.mkdir(parents=True, exist_ok=True)
    layers = layers or None
    if model is None:
        from edgeprm.perf.shapes import write_random_value_head

        model = write_random_value_head(work / f"{shape}.{layers or 'all'}layers.bf16", shape, layers)
    log(f"CPU: {cpu_info().summary()}")
    gpu = gpu_info()
    if gpu is not None:
        log(f"GPU: {gpu.summary()} (this benchmark times the CPU paths)")
    wanted = [c for c in configs(peers, onnx) if not only or c.label in only or c.backend in only]
    artifacts = prepare_artifacts(Path(model), work, wanted, log)
    rows = trajectory_rows(Path(model), trajectories, tokens)
    log(f"model: {model}; {trajectories} trajectories of ~{tokens} tokens, one per forward, "
        f"{torch.get_num_threads()} threads, best of {repeats}; each config in a fresh process\n")
    results = []
    for cfg in wanted:
        target = artifacts["onnx"].get((cfg.quantization, cfg.kernel), model) if cfg.backend == "onnx" else model
        t = time.perf_counter()
        results.append(run_config(cfg, Path(target), rows, repeats, {"gguf": {k: str(v) for k, v in
                                                                                artifacts["gguf"].items()}}))
        print(f"  {cfg.label}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    fidelity(results)
    best = recommend(results, max_mean_delta, min_spearman)
    log(format_table(results, best))
    if best is not None:
        log(f"\nrecommended: {best.config.label} ({best.tokens_per_s:.0f} tok/s; step mean |delta| vs fp32 "
            f"{best.mean_delta:.1e} <= {max_mean_delta}, Spearman {best.spearman:.4f} >= {min_spearman})")
    return {"results": [{**asdict(r), "config": asdict(r.config), "step_rewards": None} for r in results],
            "recommended": None if best is None else best.config.label, "model": str(model)}
