"""Ahead-of-time compilation of the step head's Triton kernels for real GPU targets, on a machine without a GPU.

    python -m edgeprm.kernels.aot            # compile every kernel x autotune config for every target, print a table
    python -m edgeprm.kernels.aot --write    # ...and rewrite _step_head_targets.json, which the kernels read

`triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))` runs the whole compiler down to a cubin with no
driver; `cuobjdump -res-usage` (shipped in the Triton wheel) then reports registers per thread and the stack frame,
where ptxas puts spilled registers. A config that spills (stack > 0) or needs more shared memory than the target
has per block is recorded as dropped for that target; `_step_head_triton.prune_configs` removes those configs before
autotuning on such a GPU. The GPU-only mistakes this catches on a CPU: a tile too big for T4 or Orin shared memory,
register spills on the smaller register budgets, shapes `tl.dot` rejects (the compile itself fails).

Run in a process where TRITON_INTERPRET is unset (the interpreter's kernels cannot be compiled); `compile_report`
checks that. Each target compiles with the dtype `dtype="auto"` gives there: bf16 on sm_80 and newer, fp16 on sm_75.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

# cc: (name, opt-in shared memory per block in bytes, the GPUs users run it on)
TARGETS = {
    75: ("sm_75", 64 * 1024, "T4, RTX 20"),
    80: ("sm_80", 163 * 1024, "A100"),
    86: ("sm_86", 99 * 1024, "RTX 30, A10"),
    87: ("sm_87", 163 * 1024, "Jetson Orin"),
    89: ("sm_89", 99 * 1024, "RTX 40, L4"),
    90: ("sm_90", 227 * 1024, "H100, H200"),
}
TABLE = Path(__file__).with_name("_step_head_targets.json")


@dataclass(frozen=True)
class ConfigReport:
    """One kernel config compiled for one target."""

    kernel: str
    config: str  # "BLOCK_M=16,BLOCK_K=128,BLOCK_N=32,warps=4,stages=3"
    target: int  # compute capability, e.g. 75
    registers: int
    stack_bytes: int  # > 0: registers spilled to local memory
    shared_bytes: int
    dtype: str

    @property
    def fits(self) -> bool:
        return self.stack_bytes == 0 and self.shared_bytes <= TARGETS[self.target][1]


def config_name(cfg) -> str:
    """A Triton config as a stable string: its tile sizes, warps and stages."""
    tiles = [f"{k}={v}" for k, v in cfg.kwargs.items()]
    return ",".join([*tiles, f"warps={cfg.num_warps}", f"stages={cfg.num_stages}"])


def _kernels():
    """(name, jit function, configs, signature builder) of every kernel of the step head."""
    import triton.language as tl

    from edgeprm.kernels import _step_head_triton as tk

    if tk.INTERPRET:
        raise RuntimeError("AOT compilation needs the compiled kernels: run it where TRITON_INTERPRET is unset "
                           "(a fresh process: python -m edgeprm.kernels.aot)")

    def signature(fn, dtype: str, consts: dict):
        floats = {"hidden_ptr", "w1_ptr", "b1_ptr", "w2_ptr", "b2_ptr"}
        sig = {}
        for name in fn.arg_names:
            if name in consts:
                sig[name] = "constexpr"
            elif name.endswith("_ptr"):
                sig[name] = f"*{dtype}" if name in floats else ("*i32" if name.endswith(
                    ("traj_ptr", "pos_ptr", "off_ptr", "offsets_ptr")) else "*fp32")
            elif name == "alpha":
                sig[name] = "fp32"
            else:
                sig[name] = "i32"
        return sig

    tl_dtype = {"fp16": tl.float16, "bf16": tl.bfloat16}
    return [
        ("classifier_partials", tk._classifier_partials_kernel.fn, tk.CLASSIFIER_CONFIGS,
         lambda d: {"C": 2, "HAS_B1": True, "PACKED": False, "DOT_DTYPE": tl_dtype[d], "DOT_PRECISION": "tf32"},
         signature),
        ("linear_partials", tk._linear_partials_kernel.fn, tk.LINEAR_CONFIGS,
         lambda d: {"C": 2, "PACKED": False}, signature),
        ("finish", tk._finish_kernel, [None],
         lambda d: {"C": 2, "HAS_B2": True, "HAS_FINAL": True, "AGG": "reasonflux", "NSLOT_P2": 64,
                    "BLOCK_S": tk.FINISH_BLOCK_S}, signature),
    ]


def _resources(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of the one function in a cubin, from cuobjdump -res-usage."""
    import re

    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if m is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{out}")
    return int(m.group(1)), int(m.group(2))


def compile_report(targets=tuple(TARGETS)) -> list[ConfigReport]:
    """Compile every kernel with every autotune config for every target (cc numbers); raises if one fails."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    reports = []
    for cc in targets:
        dtype = "bf16" if cc >= 80 else "fp16"
        for name, fn, configs, consts_of, signature in _kernels():
            for cfg in configs:
                consts = {**consts_of(dtype), **({} if cfg is None else cfg.kwargs)}
                options = {} if cfg is None else {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
                src = ASTSource(fn, signature(fn, dtype, consts), consts)
                try:
                    out = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=options)
                except Exception as e:
                    raise RuntimeError(f"{name} {config_name(cfg) if cfg else ''} does not compile for "
                                       f"{TARGETS[cc][0]}: {e}") from e
                regs, stack = _resources(out.asm["cubin"])
                reports.append(ConfigReport(name, config_name(cfg) if cfg else "-", cc, regs, stack,
                                            int(out.metadata.shared), dtype))
    return reports


def dropped(reports: list[ConfigReport]) -> dict[str, list[str]]:
    """{target name: [kernel:config, ...]} of the configs that do not fit their target."""
    out: dict[str, list[str]] = {TARGETS[cc][0]: [] for cc in sorted({r.target for r in reports})}
    for r in reports:
        if not r.fits:
            out[TARGETS[r.target][0]].append(f"{r.kernel}:{r.config}")
    return out


def format_table(reports: list[ConfigReport]) -> str:
    lines = [f"{'kernel':20} {'config':48} " + " ".join(f"{TARGETS[cc][0]:>16}" for cc in TARGETS),
             f"{'':20} {'':48} " + " ".join(f"{'regs/stack/smem':>16}" for _ in TARGETS)]
    rows: dict[tuple[str, str], dict[int, ConfigReport]] = {}
    for r in reports:
        rows.setdefault((r.kernel, r.config), {})[r.target] = r
    for (kernel, config), by in rows.items():
        cells = []
        for cc in TARGETS:
            r = by.get(cc)
            cell = "-" if r is None else f"{r.registers}/{r.stack_bytes}/{r.shared_bytes // 1024}K"
            cells.append(f"{cell}{'' if r is None or r.fits else ' DROP'}".rjust(16))
        lines.append(f"{kernel:20} {config:48} " + " ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    import triton

    p = argparse.ArgumentParser(prog="python -m edgeprm.kernels.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"rewrite {TABLE.name} from this compile")
    p.add_argument("--json", action="store_true", help="print every report as JSON")
    args = p.parse_args(argv)
    reports = compile_report()
    print(json.dumps([asdict(r) | {"fits": r.fits} for r in reports], indent=1) if args.json else
          format_table(reports))
    if args.write:
        TABLE.write_text(json.dumps({"triton": triton.__version__, "dropped": dropped(reports)}, indent=2) + "\n")
        print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
