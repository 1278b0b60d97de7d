"""What this machine runs fast: the CPU features and CUDA capability that decide edgeprm's dtype and kernels.

Detected once per process, here and nowhere else:
- `cpu_info()`: the CPU's name and the instruction-set features that change which kernel is fastest: AVX2 / FMA,
  AVX-512, VNNI (AVX512-VNNI or AVX-VNNI: int8 dot products), AVX512-BF16 and AMX (native bf16 / int8 matrix
  units), and on ARM NEON dot products, BF16 and SVE. The booleans torch's own kernels dispatch on come from torch
  (its bundled pytorch/cpuinfo library, `torch.backends.cpu.get_cpu_capability` and `torch.cpu._is_*`), so a choice
  made here is the one torch will execute; the flag list and the model name come from the kernel's /proc/cpuinfo (no
  extra dependency: py-cpuinfo was measured at 1.15 s per call, as it runs cpuid in a subprocess).
- `gpu_info()`: the CUDA device's name, compute capability and memory (None without CUDA).

Importing this module does not import torch; `cpu_info()` uses torch only when it is already installed.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# What each feature means for edgeprm, in the order the summary prints them.
FEATURES = {
    "avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8", "asimddp": "NEON-DOT",
    "bf16": "ARM-BF16", "sve": "SVE",
}


def _proc_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo; ('', empty) where there is none (macOS,
    Windows)."""
    if not path.is_file():
        return platform.processor(), frozenset()
    model, flags = "", set()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model or platform.processor(), frozenset(flags)


def _torch_isa() -> dict[str, bool] | None:
    """The ISA booleans torch's CPU kernels dispatch on, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    probes = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported", "avx512_vnni": "_is_vnni_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}
    out = {}
    for name, fn in probes.items():
        probe = getattr(torch.cpu, fn, None)
        out[name] = bool(probe()) if probe is not None else False
    out["capability"] = torch.backends.cpu.get_cpu_capability()
    return out


@dataclass(frozen=True)
class CPUInfo:
    """This machine's CPU: its name, cores, flags, and the features derived from them."""

    model: str
    arch: str
    cores: int
    flags: frozenset[str]
    torch_capability: str | None  # "AVX2", "AVX512", "DEFAULT", ... (None without torch)

    def has(self, feature: str) -> bool:
        return feature in self.flags

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix math in hardware (AVX512-BF16 or AMX on x86, BF16 on ARM): bf16 GEMMs beat fp32 there."""
        return self.has("avx512_bf16") or self.has("amx_bf16") or self.has("bf16")

    @property
    def int8_dot(self) -> str:
        """The best int8 dot-product instructions: 'amx', 'vnni', 'avx2', 'neon-dot' or 'none'."""
        if self.has("amx_int8"):
            return "amx"
        if self.has("avx512_vnni") or self.has("avx_vnni"):
            return "vnni"
        if self.has("avx2"):
            return "avx2"
        return "neon-dot" if self.has("asimddp") else "none"

    @property
    def kind(self) -> str:
        """A short key for the kind of CPU, for caches and tables: the features that change kernel choices."""
        return "+".join(n for n in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                                    "amx_bf16", "asimddp", "bf16", "sve") if self.has(n)) or self.arch

    def summary(self) -> str:
        found = [label for flag, label in FEATURES.items() if self.has(flag)]
        return (f"{self.model or 'unknown CPU'} ({self.arch}, {self.cores} cores): "
                f"{', '.join(found) if found else 'no SIMD features edgeprm uses'}; native bf16 "
                f"{'yes' if self.native_bf16 else 'no'}, int8 dot products: {self.int8_dot}")


@functools.cache
def cpu_info() -> CPUInfo:
    model, flags = _proc_cpuinfo()
    isa = _torch_isa()
    if isa is not None:  # torch's detection is what its kernels will do; add what it knows to the flag list
        flags = flags | {name for name, on in isa.items() if on is True and name != "capability"}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CPUInfo(model, platform.machine(), cores, frozenset(flags),
                   None if isa is None else str(isa.get("capability")))


@dataclass(frozen=True)
class GPUInfo:
    """The CUDA device torch uses."""

    name: str
    capability: tuple[int, int]
    memory_bytes: int

    @property
    def native_bf16(self) -> bool:
        return self.capability >= (8, 0)

    def summary(self) -> str:
        return (f"{self.name} (sm_{self.capability[0]}{self.capability[1]}, {self.memory_bytes / 2**30:.0f} GiB): "
                f"native bf16 {'yes' if self.native_bf16 else 'no (fp16 instead)'}")


@functools.cache
def gpu_info(index: int = 0) -> GPUInfo | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    return GPUInfo(props.name, (props.major, props.minor), props.total_memory)
