"""Which kernel runs a quantization scheme on this CPU: the fastest one, measured here, not assumed.

The fastest kernel differs between CPU kinds (measured, 2 threads, 512 x 1536 -> 8960; bench/QUANT.md has the tables):
- int8 on an AMX / AVX512-VNNI Xeon: oneDNN 12.6 ms, fbgemm 23.3 ms; on an AVX2-only EPYC fbgemm (217 GOP/s) is the
  one that does not fall back to a slow path;
- int4 on a CPU with native bf16 (AVX512-BF16 / AMX): bitsandbytes' NF4 (C dequantize + bf16 GEMM) 11 ms, NF4
  expanded to fp32 before an fp32 GEMM 59 ms; without native bf16 every bf16-based 4-bit path runs at ~0.2x fp32,
  and the fp32 expansion is the fastest.

`fp32_gemm()` does the same for unquantized float32 Linear layers: torch's default (MKL) against oneDNN with the
weight packed once (`edgeprm.kernels.cpu_linear`; 2x faster on an AMD EPYC with AVX-512, measured 86 vs 45 ms on
512 x 1536 -> 8960). `EDGEPRM_FP32_GEMM=mkl|onednn` forces one.

`cpu_kernel(scheme, dtype)` times every CPU kernel of the scheme that can run here on one layer-sized GEMM
(256 tokens x 1536 -> 4096, median of 3 after a warm-up, ~1 s in all), keeps the fastest, and remembers it in
`$EDGEPRM_CACHE/kernel-choice.json` (default ~/.cache/edgeprm) per CPU kind, model, torch version, thread count and
compute dtype, so a machine measures once. `EDGEPRM_KERNEL_PROBE=0` skips the measurement and takes the static
preference of `preferred_cpu_kernel` (what the measurements above found for each CPU kind); `QuantConfig(kernel=...)`
always wins over both.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from pathlib import Path

import torch

from edgeprm.hardware import cpu_info
from edgeprm.quant.config import QUANT_SCHEMES, QuantConfig

PROBE_ENV = "EDGEPRM_KERNEL_PROBE"
PROBE_SHAPE = (256, 1536, 4096)  # tokens, in, out: a layer-sized GEMM that takes milliseconds


def cache_file() -> Path:
    root = Path(os.environ.get("EDGEPRM_CACHE", Path.home() / ".cache" / "edgeprm"))
    return root / "kernel-choice.json"


def available(kernel: str) -> bool:
    """Whether a kernel's library is installed here (bitsandbytes is optional)."""
    if kernel.startswith("bnb-"):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return False
    return True


def preferred_cpu_kernel(scheme: str, dtype: torch.dtype = torch.float32) -> str:
    """The kernel the measurements found fastest for this kind of CPU (used when probing is off)."""
    cpu = cpu_info()
    if scheme == "int8":
        return "onednn" if cpu.int8_dot in ("amx", "vnni") else "fbgemm"
    if cpu.native_bf16 and available("bnb-nf4"):
        return "bnb-nf4"
    return "nf4-dense"


def median_seconds(m, x, runs: int = 3) -> float:
    """Median seconds of `m(x)` over `runs` calls after a warm-up, without autograd."""
    with torch.inference_mode():
        m(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            m(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_kernel(scheme: str, kernel: str, dtype: torch.dtype, shape=PROBE_SHAPE) -> float:
    """Median seconds of one forward of `kernel` on a random layer of `shape` (tokens, in, out)."""
    from edgeprm.quant.modules import build_linear
    from edgeprm.quant.primitives import quantize_weight

    tokens, k, n = shape
    g = torch.Generator().manual_seed(0)
    cfg = QuantConfig(scheme, kernel)
    w = torch.randn(n, k, generator=g) / k**0.5
    m = build_linear(kernel, quantize_weight(cfg.spec.storage, w, cfg.nf4_blocksize), None, (n, k), cfg,
                     torch.device("cpu"))
    x = torch.randn(tokens, k, generator=g).to(dtype)
    return median_seconds(m, x)


def _key(scheme: str, dtype: torch.dtype) -> str:
    cpu = cpu_info()
    return f"{scheme}|{cpu.kind}|{cpu.model}|torch {torch.__version__}|{torch.get_num_threads()} threads|{dtype}"


def _remember(key: str, times, handicap: dict[str, float] | None = None) -> str:
    """The cached choice for `key`, else the fastest of `times()` ({name: seconds}; each multiplied by its
    `handicap` factor for the comparison), written to the cache with the measured times."""
    path = cache_file()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), dict) and "kernel" in cached[key]:
        return cached[key]["kernel"]
    measured = times()
    best = min(measured, key=lambda k: measured[k] * (handicap or {}).get(k, 1.0))
    cached[key] = {"kernel": best, "ms": {k: round(v * 1e3, 2) for k, v in measured.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cached, indent=1))
        os.replace(tmp, path)
    except OSError:  # a read-only home: measure again next time
        pass
    return best


def time_fp32_gemm(engine: str, shape=PROBE_SHAPE) -> float:
    """Median seconds of one float32 Linear forward of `shape` (tokens, in, out) on "mkl" or "onednn"."""
    from edgeprm.kernels.cpu_linear import OnednnLinear

    tokens, k, n = shape
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(k, n).requires_grad_(False)
    m = OnednnLinear(lin) if engine == "onednn" else lin
    x = torch.randn(tokens, k, generator=g)
    return median_seconds(m, x)


@functools.cache
def fp32_gemm() -> str:
    """"onednn" where oneDNN's packed fp32 GEMM is measured faster on this CPU than torch's default, else "mkl"."""
    forced = os.environ.get("EDGEPRM_FP32_GEMM", "").strip().lower()
    if forced in ("mkl", "onednn"):
        return forced
    from edgeprm.kernels.cpu_linear import available as onednn_available

    if not onednn_available():
        return "mkl"
    if os.environ.get(PROBE_ENV, "1").strip() == "0":
        return "mkl"
    cpu = cpu_info()
    key = f"fp32-gemm|{cpu.kind}|{cpu.model}|torch {torch.__version__}|{torch.get_num_threads()} threads"
    # oneDNN must win by a clear margin: a near-tie keeps torch's default (and its exact summation order)
    return _remember(key, lambda: {e: time_fp32_gemm(e) for e in ("mkl", "onednn")}, {"onednn": 1.15})


@functools.cache
def cpu_kernel(scheme: str, dtype: torch.dtype | None = None) -> str:
    """The fastest CPU kernel of `scheme` for compute `dtype` on this CPU (see the module docstring)."""
    dtype = dtype or torch.float32
    candidates = [k for k in QUANT_SCHEMES[scheme].cpu_kernels if available(k)]
    if os.environ.get(PROBE_ENV, "1").strip() == "0" or len(candidates) == 1:
        preferred = preferred_cpu_kernel(scheme, dtype)
        return preferred if preferred in candidates else candidates[0]
    best = _remember(_key(scheme, dtype), lambda: {k: time_kernel(scheme, k, dtype) for k in candidates})
    return best if best in candidates else preferred_cpu_kernel(scheme, dtype)
