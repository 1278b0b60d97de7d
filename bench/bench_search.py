"""KV-cached scoring against re-scoring: step-level search, shared-prompt Best-of-N and chunked prefill.

    python bench/bench_search.py                    # demo PRM and a 4-layer Qwen2.5-1.5B-shaped PRM, all three parts
    python bench/bench_search.py --layers 2 --rss-tokens 8192
    python bench/bench_search.py --only search

For each subject (the bundled demo PRM; a random PRM of the exact Qwen2.5-1.5B shape cut to `--layers` layers —
the ratios do not depend on depth, absolute times do), one run prints:

1. search: a `--beam`-beam, `--steps`-step beam search (`--expansions` next steps per beam per iteration) with
   sessions (`cache=True`) against the same search re-scoring every partial solution from its first token
   (`cache=False`, shared prompts off: what a search loop without sessions does). Backbone tokens and wall time;
   the two must choose the same solution.
2. best-of-16: sixteen candidates under one ~`--prompt-tokens`-token prompt, scored with the prompt computed once
   (the default) against independently.
3. rss: peak RSS of scoring one `--rss-tokens`-token trajectory with chunked prefill (the default chunk) and in one
   shot, each in a fresh process (RSS after loading, peak, and the difference).

The policy is a fixed tree of arithmetic steps (~25 tokens each), so both searches see the same proposals.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import edgeprm
from edgeprm.backends.prefix import common_prefix
from edgeprm.hardware import cpu_info
from edgeprm.search import beam_search

CACHE = Path(os.environ.get("EDGEPRM_CACHE", Path.home() / ".cache" / "edgeprm")) / "bench"


def problem_text(scorer, tokens: int, seed: int = 0) -> str:
    """A word problem, story sentences added until it is `tokens` tokens long in the scorer's tokenizer."""
    rng = random.Random(seed)
    text, question = "Problem:", " How many apples does it sell in 4 weeks?"
    while len(scorer.tokenizer.encode(text + question)[0]) < tokens:
        text += (f" A shop sells {rng.randint(10, 99)} boxes of {rng.randint(3, 19)} apples on day "
                 f"{rng.randint(1, 30)} and gives {rng.randint(2, 9)} boxes to the school.")
    return text + question


def tree_proposer(depth: int):
    """propose(problem, steps, n): n different arithmetic steps per node of a fixed tree, `depth` steps deep."""
    def propose(problem, steps, n):
        if len(steps) >= depth:
            return []
        rng = random.Random(f"{problem}|{'|'.join(steps)}")
        return [f"Step {len(steps) + 1}: {rng.randint(10, 99)} * {rng.randint(2, 9)} = {rng.randint(100, 999)}, "
                f"so we carry {rng.randint(1, 99)} apples forward." for _ in range(n)]
    return propose


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def load(model, **options):
    return edgeprm.load(model, device="cpu", **options)


def bench_search(model, args) -> list[str]:
    cached, rescoring = load(model), load(model, share_prefix=False)
    problem = problem_text(cached, args.problem_tokens)
    propose = tree_proposer(args.steps)
    kw = dict(beam_width=args.beam, expansions=args.expansions, max_steps=args.steps)
    a, ta = timed(lambda: beam_search(propose, cached, problem, **kw))
    b, tb = timed(lambda: beam_search(propose, rescoring, problem, cache=False, **kw))
    same = "same" if a.steps == b.steps and abs(a.score - b.score) <= 1e-4 else "DIFFERENT"
    return [f"| search {args.beam}x{args.expansions}, {args.steps} steps | {b.backbone_tokens} | "
            f"{a.backbone_tokens} | {b.backbone_tokens / a.backbone_tokens:.1f}x | {tb:.2f} s | {ta:.2f} s | "
            f"{tb / ta:.1f}x | {same} pick, {a.candidates} candidates |"]


def bench_best_of_n(model, args) -> list[str]:
    shared, alone = load(model), load(model, share_prefix=False)
    problem = problem_text(shared, args.prompt_tokens, seed=1)
    propose = tree_proposer(8)
    cands = []
    for i in range(16):
        steps = []
        while True:
            nxt = propose(problem + str(i), steps, 1)
            if not nxt:
                break
            steps.append(nxt[0])
        cands.append(steps)
    encode = shared.encoder.encode
    prompt = common_prefix(encode(edgeprm.Trajectory(problem, cands[0])).ids,
                           encode(edgeprm.Trajectory(problem, cands[1])).ids)
    out = {}
    for name, s in (("shared", shared), ("alone", alone)):
        s.best_of_n(problem, cands)  # warm-up
        t0 = s.backbone_tokens
        (best, results), sec = timed(lambda s=s: s.best_of_n(problem, cands), args.repeats)
        out[name] = (best, results, (s.backbone_tokens - t0) // args.repeats, sec)
    (bs, rs, ks, ts), (ba, ra, ka, ta) = out["shared"], out["alone"]
    delta = max(abs(x.score - y.score) for x, y in zip(rs, ra))
    return [f"| best-of-16, ~{prompt}-token prompt | {ka} | {ks} | {ka / ks:.1f}x | {ta:.2f} s | {ts:.2f} s | "
            f"{ta / ts:.1f}x | {'same' if bs == ba else 'DIFFERENT'} pick, max score delta {delta:.1e} |"]


RSS_WORKER = r"""
import json, sys, threading, time
import psutil, edgeprm
model, tokens, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = edgeprm.load(None if model == "demo" else model, device="cpu", max_length=tokens + 64, chunk_tokens=chunk,
                 share_prefix=False)
step = "Step: 12 * 7 = 84, so we carry 84 apples forward."
def length(n):
    try:
        return len(s.encoder.encode(edgeprm.Trajectory("How many apples?", [step] * n)).ids)
    except ValueError:  # over the limit
        return tokens + 1
lo, hi = 1, 1
while length(hi) <= tokens:
    hi *= 2
while lo < hi:  # the most steps that fit in `tokens`
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if length(mid) <= tokens else (lo, mid - 1)
steps = [step] * lo
s.score("How many apples?", steps[:8])  # warm-up
proc = psutil.Process()
base = proc.memory_info().rss
peak, done = [base], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
threading.Thread(target=watch, daemon=True).start()
t = time.perf_counter()
r = s.score("How many apples?", steps)
sec = time.perf_counter() - t
done.set()
print(json.dumps({"tokens": r.num_tokens, "after_load": base, "peak": max(peak[0], proc.memory_info().rss),
                  "seconds": sec, "score": r.score}))
"""


def bench_rss(model, args) -> list[str]:
    lines = []
    runs = {}
    for label, chunk in ((f"chunked ({1024})", 1024), ("one shot", 0)):
        out = subprocess.run([sys.executable, "-c", RSS_WORKER, str(model), str(args.rss_tokens), str(chunk)],
                             capture_output=True, text=True, check=False)
        if out.returncode:
            lines.append(f"| rss {label} | failed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        runs[label] = r = json.loads(out.stdout.strip().splitlines()[-1])
        lines.append(f"| rss, {r['tokens']}-token trajectory, {label} | after load {r['after_load'] / 2**30:.2f} GiB "
                     f"| peak {r['peak'] / 2**30:.2f} GiB | +{(r['peak'] - r['after_load']) / 2**30:.2f} GiB | "
                     f"{r['seconds']:.1f} s | | | score {r['score']:.6f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4, help="layers of the Qwen2.5-1.5B-shaped subject")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--expansions", type=int, default=4)
    ap.add_argument("--problem-tokens", type=int, default=150, help="prompt length of the search problem")
    ap.add_argument("--prompt-tokens", type=int, default=300, help="prompt length for best-of-16")
    ap.add_argument("--rss-tokens", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["search", "best-of-n", "rss"], action="append")
    ap.add_argument("--subjects", choices=["demo", "1.5b"], action="append")
    args = ap.parse_args(argv)
    from edgeprm.loading import default_model_dir
    from edgeprm.perf.shapes import write_random_value_head

    parts = args.only or ["search", "best-of-n", "rss"]
    subjects = {"demo": default_model_dir()}
    if "1.5b" in (args.subjects or ["demo", "1.5b"]):
        subjects["1.5b"] = write_random_value_head(CACHE / f"qwen2.5-1.5b.{args.layers}layers.bf16", "qwen2.5-1.5b",
                                                   args.layers)
    if args.subjects:
        subjects = {k: v for k, v in subjects.items() if k in args.subjects}
    print(f"CPU: {cpu_info().summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, model in subjects.items():
        about = "demo PRM (step-classifier, 4 layers, hidden 192)" if name == "demo" else (
            f"random Qwen2.5-1.5B shape, {args.layers} layers (value-head, fp32 compute)")
        print(f"\n## {about}\n")
        print("| case | tokens without | tokens with | ratio | time without | time with | speed-up | check |")
        print("|---|---|---|---|---|---|---|---|")
        for part, fn in (("search", bench_search), ("best-of-n", bench_best_of_n), ("rss", bench_rss)):
            if part in parts:
                for line in fn(model if name != "demo" else "demo" if part == "rss" else None, args):
                    print(line, flush=True)
    print(f"\n(peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
