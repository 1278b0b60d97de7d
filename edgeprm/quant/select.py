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
(256 tokens x 1536 -> 4096, ~1 s in all), keeps the fastest, and remembers it in
`$EDGEPRM_CACHE/kernel-choice.json` (default ~/.cache/edgeprm) per CPU kind, model, torch version, thread count and
compute dtype, so a machine measures once. `EDGEPRM_KERNEL_PROBE=0` skips the measurement and takes the static
preference of `preferred_cpu_kernel` (what the measurements above found for each CPU kind); `QuantConfig(kernel=...)`
always wins over both.

The candidates are timed in turns (one call of each, ROUNDS times, after a warm-up call of each) and each keeps its
fastest call: a burst of load from another process then slows every candidate alike. Timed one after the other
(median of 3 each) while a calibration ran on the same 2 cores, the int8 probe once measured fbgemm 22.5 ms, oneDNN
20.5 ms and bitsandbytes 4.4 ms, and chose bitsandbytes (unloaded: 2.8 / 2.4 / 4.1 ms).
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import torch

from edgeprm.hardware import cpu_info
from edgeprm.quant.config import QUANT_SCHEMES, QuantConfig

PROBE_ENV = "EDGEPRM_KERNEL_PROBE"
PROBE_SHAPE = (256, 1536, 4096)  # tokens, in, out: a layer-sized GEMM that takes milliseconds
ROUNDS = 5


def cache_file() -> Path:
    from edgeprm.loading import cache_dir

    return cache_dir() / "kernel-choice.json"


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


def interleaved_seconds(probes: dict[str, tuple], rounds: int = ROUNDS) -> dict[str, float]:
    """{name: fastest seconds of `m(x)`} for probes {name: (m, x)}, timed in turns: one call of each per round,
    after a warm-up call of each, without autograd."""
    best = {name: float("inf") for name in probes}
    with torch.inference_mode():
        for m, x in probes.values():
            m(x)
        for _ in range(rounds):
            for name, (m, x) in probes.items():
                t = time.perf_counter()
                m(x)
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def kernel_probe(scheme: str, kernel: str, dtype: torch.dtype, shape=PROBE_SHAPE) -> tuple:
    """(module, input): `kernel` on a random layer of `shape` (tokens, in, out)."""
    from edgeprm.quant.modules import build_linear
    from edgeprm.quant.primitives import quantize_weight

    tokens, k, n = shape
    g = torch.Generator().manual_seed(0)
    cfg = QuantConfig(scheme, kernel)
    w = torch.randn(n, k, generator=g) / k**0.5
    m = build_linear(kernel, quantize_weight(cfg.spec.storage, w, cfg.nf4_blocksize), None, (n, k), cfg,
                     torch.device("cpu"))
    return m, torch.randn(tokens, k, generator=g).to(dtype)


def time_kernels(scheme: str, kernels, dtype: torch.dtype, shape=PROBE_SHAPE) -> dict[str, float]:
    """{kernel: fastest seconds of one forward} for each of `kernels` on the same random layer, timed in turns."""
    return interleaved_seconds({k: kernel_probe(scheme, k, dtype, shape) for k in kernels})


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


def fp32_gemm_probe(engine: str, shape=PROBE_SHAPE) -> tuple:
    """(module, input): a float32 Linear of `shape` (tokens, in, out) on "mkl" or "onednn"."""
    from edgeprm.kernels.cpu_linear import OnednnLinear

    tokens, k, n = shape
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(k, n).requires_grad_(False)
    return (OnednnLinear(lin) if engine == "onednn" else lin), torch.randn(tokens, k, generator=g)


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
    return _remember(key, lambda: interleaved_seconds({e: fp32_gemm_probe(e) for e in ("mkl", "onednn")}),
                     {"onednn": 1.15})


# Kernels run only when a QuantConfig names them, never chosen by speed: bitsandbytes LLM.int8 (per-row activation
# scales) misses the GSM8K step bar, mean |delta| 9.9e-4 against 7.0e-4, and can outrun the two-digit int8 GEMMs.
ASKED_FOR_ONLY = ("bnb-int8",)


@functools.cache
def cpu_kernel(scheme: str, dtype: torch.dtype | None = None) -> str:
    """The fastest CPU kernel of `scheme` for compute `dtype` on this CPU (see the module docstring)."""
    dtype = dtype or torch.float32
    candidates = [k for k in QUANT_SCHEMES[scheme].cpu_kernels if available(k) and k not in ASKED_FOR_ONLY]
    if os.environ.get(PROBE_ENV, "1").strip() == "0" or len(candidates) == 1:
        preferred = preferred_cpu_kernel(scheme, dtype)
        return preferred if preferred in candidates else candidates[0]
    best = _remember(_key(scheme, dtype), lambda: time_kernels(scheme, candidates, dtype))
    return best if best in candidates else preferred_cpu_kernel(scheme, dtype)
