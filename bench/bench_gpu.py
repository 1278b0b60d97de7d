"""One prepared command for a machine with an NVIDIA GPU: everything edgeprm runs on CUDA, timed in one go.

    python bench/bench_gpu.py                 # about 5 minutes on one GPU; prints four tables, writes nothing
    python bench/bench_gpu.py --layers 28     # the whole Qwen2.5-1.5B shape (default: 8 layers of it)

1. Correctness first: the compiled Triton step head (autotuned, configs pruned for this GPU by
   `edgeprm.kernels._step_head_triton.prune_configs`) against `step_head_ref` on fresh random inputs of every family,
   fp32 / fp16 / bf16, padded and packed.
2. The step head alone: `triton.testing.do_bench` medians of the Triton head vs the reference recipe (head on every
   token, then pick the steps) vs gather-then-head in PyTorch, at the 1.5B (H 1536) and 7B (H 3584) widths.
3. The whole scorer: a random value-head PRM of the Qwen2.5-1.5B shape in bf16 (`edgeprm.load(..., device="cuda")`,
   Triton head) vs transformers' own recipe on the same weights (`AutoModelForCausalLM` + the reward head over the
   last hidden state), tokens/s on batches of 512-token trajectories, and the largest |delta| between the two.
4. ONNX Runtime's CUDA provider on the fp32 bundle of the same model, when onnxruntime-gpu is installed.

Prints tables; asserts nothing about time. Needs torch with CUDA and triton; steps 4 needs onnxruntime-gpu.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def check_kernels() -> None:
    import os

    os.environ["EDGEPRM_TEST_COMPILED"] = "1"  # the kernel tests' module keeps the compiled kernels then
    sys.path.insert(0, str(ROOT / "tests" / "kernels"))
    from test_step_head import FAMILIES, check_against_ref  # the kernel tests' own comparison, on CUDA

    t0 = time.perf_counter()
    n = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for family in FAMILIES:
            for packed in (False, True):
                check_against_ref([3, 0, 1, 70], family, 1536, packed, final=True, dtype=dtype, t=600, device="cuda")
                n += 1
    print(f"1. Triton step head == step_head_ref on {n} random cases (fp32/fp16/bf16, padded/packed, 3 families): "
          f"ok in {time.perf_counter() - t0:.1f} s\n")


def step_head_table() -> None:
    import triton.testing
    from bench_step_head import Case, gather_then_head, make_inputs, recipe, triton_head

    cases = [Case("value", 1536, 8, 1024, 30), Case("value", 1536, 8, 4096, 50), Case("classifier", 3584, 8, 1024, 30),
             Case("classifier", 3584, 8, 4096, 50), Case("token_prob", 1536, 1, 4096, 50)]
    print("2. step head, do_bench medians (ms), bf16 on CUDA")
    print(f"{'case':36} {'recipe':>9} {'gather':>9} {'triton':>9} {'vs recipe':>10}")
    for case in cases:
        inp = make_inputs(case, device="cuda", dtype=torch.bfloat16)
        ms = {name: triton.testing.do_bench(lambda f=f, inp=inp: f(inp)) for name, f in
              (("recipe", recipe), ("gather", gather_then_head), ("triton", triton_head))}
        print(f"{str(case):36} {ms['recipe']:9.3f} {ms['gather']:9.3f} {ms['triton']:9.3f} "
              f"{ms['recipe'] / ms['triton']:9.1f}x")
    print()


def scorer_table(layers: int, work: Path) -> Path:
    from bench_onnx import trajectories
    from bench_quant import write_random_value_head

    import edgeprm

    ckpt = write_random_value_head(work / f"qwen2.5-1.5b-shape.{layers}layers.bf16", layers)
    rows = trajectories(ckpt, 16, 512)
    scorer = edgeprm.load(ckpt, device="cuda", dtype="bfloat16", token_budget=8192)
    tokens = sum(len(scorer.prepare(r).encoded.ids) for r in rows)

    def timed(fn, reps=5):
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    ours = scorer.score_batch(rows)
    t_ours = timed(lambda: scorer.score_batch(rows))
    # transformers' recipe on the same weights: the causal LM's last hidden state, the head at every last token.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    lm = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16).to("cuda").eval()
    sd = torch.load(ckpt / "reward_head.pt", weights_only=True)
    head = torch.nn.Linear(lm.config.hidden_size, 1).to("cuda", torch.bfloat16)
    head.load_state_dict(sd)
    texts = [r["problem"] + "\n\n".join(r["steps"]) for r in rows]

    def recipe_scores():
        enc = tok(texts, return_tensors="pt", padding=True).to("cuda")
        with torch.inference_mode():
            hs = lm(**enc, output_hidden_states=True).hidden_states[-1]
        last = enc["attention_mask"].sum(1) - 1
        return torch.sigmoid(head(hs[torch.arange(len(texts)), last])).float().squeeze(-1)

    ref = recipe_scores().tolist()
    t_ref = timed(recipe_scores)
    delta = max(abs(a.trajectory_reward - b) for a, b in zip(ours, ref))
    print(f"3. whole scorer, {layers} layers of the Qwen2.5-1.5B shape, 16 x ~512-token trajectories, bf16")
    print(f"{'path':40} {'tok/s':>9}")
    print(f"{'edgeprm (Triton head)':40} {tokens / t_ours:9.0f}")
    print(f"{'transformers recipe':40} {tokens / t_ref:9.0f}")
    print(f"trajectory reward max |delta| between them: {delta:.2e} (bf16 rounding)\n")
    return ckpt


def onnx_table(ckpt: Path, work: Path) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        print("4. ONNX Runtime: not installed (pip install onnxruntime-gpu, never beside onnxruntime)")
        return
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("4. ONNX Runtime: no CUDAExecutionProvider in this onnxruntime (install onnxruntime-gpu)")
        return
    from bench_onnx import trajectories

    import edgeprm
    from edgeprm.export.onnx import ExportConfig, export

    bundle = export(ckpt, work / "bundle-fp32", ExportConfig("none"))
    rows = trajectories(ckpt, 16, 512)
    scorer = edgeprm.load(bundle, backend="onnx", device="cuda")
    tokens = sum(len(scorer.prepare(r).encoded.ids) for r in rows)
    scorer.score_batch(rows)
    t = time.perf_counter()
    scorer.score_batch(rows)
    dt = time.perf_counter() - t
    print(f"4. ONNX Runtime CUDA provider, fp32 bundle: {tokens / dt:.0f} tok/s ({scorer.providers[0]})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=8, help="layers of the Qwen2.5-1.5B shape for steps 3-4")
    p.add_argument("--work-dir", default=None, help="where the random checkpoint and bundle go (default: a temp dir)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark is for a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))}), "
          f"torch {torch.__version__}\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        check_kernels()
        step_head_table()
        ckpt = scorer_table(args.layers, work)
        onnx_table(ckpt, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
