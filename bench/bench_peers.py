"""edgeprm against its peers on this CPU, in one run: `edgeprm bench --peers` plus the ratios that matter.

    python bench/bench_peers.py                      # 4-layer slice of the Qwen2.5-1.5B shape, 512-token prefills
    python bench/bench_peers.py --full               # ...then the recommended config at the whole 1.5B shape
    pip install 'edgeprm[peers]'                     # llama-cpp-python (builds llama.cpp) and gguf, for the peers

Peers on the same random weights and the same token ids: transformers' own recipe (fp32, bf16), and llama.cpp
(F16, Q8_0, Q4_K_M; per-token hidden states through llama-cpp-python, edgeprm's reward head on them). Below the table
it prints edgeprm's int4 paths against llama.cpp Q4_K_M (speed and peak RSS), torch fp32 against ONNX fp32, and
edgeprm's fastest path against llama.cpp's fastest. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprm.perf.runner import run  # noqa: E402


def ratios(out: dict) -> list[str]:
    ok = {r["config"]["label"]: r for r in out["results"] if r["error"] is None}

    def tps(label):
        return ok[label]["tokens_per_s"] if label in ok else None

    lines = []
    q4 = ok.get("llama.cpp Q4_K_M")
    for label in [k for k in ok if " int4 " in k or k == "onnx int4"]:
        if q4:
            lines.append(f"{label} vs llama.cpp Q4_K_M: {tps(label) / q4['tokens_per_s']:.2f}x speed, peak RSS "
                         f"{ok[label]['peak_rss'] / 2**30:.2f} vs {q4['peak_rss'] / 2**30:.2f} GiB")
    if tps("torch fp32") and tps("onnx fp32"):
        lines.append(f"torch fp32 vs ONNX fp32: {tps('torch fp32') / tps('onnx fp32'):.2f}x")
    ours = [r for r in ok.values() if not r["config"]["peer"]]
    llama = [r for r in ok.values() if r["config"]["label"].startswith("llama.cpp")]
    if ours and llama:
        a, b = max(ours, key=lambda r: r["tokens_per_s"]), max(llama, key=lambda r: r["tokens_per_s"])
        lines.append(f"fastest edgeprm path ({a['config']['label']}) vs llama.cpp's fastest ({b['config']['label']}): "
                     f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--trajectories", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--full", action="store_true", help="also the recommended config at the whole 1.5B shape")
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    out = run(None, "qwen2.5-1.5b", args.layers, args.tokens, args.trajectories, args.repeats, work, peers=True)
    print("\n" + "\n".join(ratios(out)))
    if args.full and out["recommended"]:
        print(f"\nthe whole Qwen2.5-1.5B shape, {out['recommended']} against torch fp32:")
        run(None, "qwen2.5-1.5b", None, args.tokens, 2, 2, work, only=["torch fp32", out["recommended"]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
