"""nf4-dense per GEMM: NF4 expanded chunk by chunk before each product, on each fp32 engine, next to fp32 Linear.

    python bench/bench_nf4_dense.py [--tokens 512] [--repeats 7]

The three Linear shapes of a Qwen2.5-1.5B decoder layer (gate/up, down, q/o); best of `--repeats` calls, the
threads torch has. Prints one markdown table: fp32 on MKL, fp32 on oneDNN (weights packed at load), and
`Nf4DenseLinear` with its chunk products on MKL (torch.mm) and on oneDNN.
"""

from __future__ import annotations

import argparse
import time

import torch

from edgeprm.hardware import cpu_info
from edgeprm.kernels.cpu_linear import OnednnLinear, available
from edgeprm.quant.config import QuantConfig
from edgeprm.quant.modules import build_linear
from edgeprm.quant.primitives import quantize_weight

SHAPES = [(1536, 8960), (8960, 1536), (1536, 1536)]  # (in, out)


def best_ms(f, x, repeats: int) -> float:
    with torch.inference_mode():
        f(x)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            f(x)
            best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"CPU: {cpu_info().summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    engines = ["mkl", "onednn"] if available() else ["mkl"]
    cols = ["fp32 mkl", *(["fp32 onednn (packed)"] if available() else []), *(f"nf4-dense {e}" for e in engines)]
    print(f"| {args.tokens} tokens | " + " | ".join(f"{c} ms" for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    g = torch.Generator().manual_seed(0)
    for k, n in SHAPES:
        w = torch.randn(n, k, generator=g) / k**0.5
        x = torch.randn(args.tokens, k, generator=g)
        lin = torch.nn.Linear(k, n, bias=False).requires_grad_(False)
        lin.weight.data = w
        times = [best_ms(lin, x, args.repeats)]
        if available():
            times.append(best_ms(OnednnLinear(lin), x, args.repeats))
        m = build_linear("nf4-dense", quantize_weight("nf4", w), None, (n, k), QuantConfig("int4", "nf4-dense"),
                         torch.device("cpu"))
        for e in engines:
            m.gemm = e
            times.append(best_ms(m, x, args.repeats))
        print(f"| {k} -> {n} | " + " | ".join(f"{t:.1f}" for t in times) + " |")


if __name__ == "__main__":
    main()
