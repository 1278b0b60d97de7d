"""Every Triton kernel of the step head, with every autotune config, compiles for real GPU targets on this CPU-only
machine; the configs that spill or overflow shared memory are the ones the kernels drop for that target."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
# A fresh interpreter without TRITON_INTERPRET (the interpreter's kernels cannot be compiled); one per group of
# targets, two at a time, so the ~80 compiles use both cores.
COMPILE = r"""
import json, sys
from dataclasses import asdict
from edgeprm.kernels.aot import compile_report
print(json.dumps([asdict(r) | {"fits": r.fits} for r in compile_report(tuple(int(t) for t in sys.argv[1:]))]))
"""
GROUPS = [("75", "86", "89"), ("80", "87", "90")]


@pytest.fixture(scope="module")
def reports():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_DEFAULT_FP_FUSION": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", COMPILE, *g], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for g in GROUPS]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, stderr[-4000:]
        out += json.loads(stdout.strip().splitlines()[-1])
    return out


def test_every_kernel_and_config_compiles_for_every_target(reports):
    from edgeprm.kernels import aot

    kernels = {"classifier_partials": 8, "linear_partials": 4, "finish": 1}
    for cc in aot.TARGETS:
        mine = [r for r in reports if r["target"] == cc]
        assert {k: sum(r["kernel"] == k for r in mine) for k in kernels} == kernels, cc
        assert all(0 < r["registers"] <= 255 for r in mine), cc
        for k in kernels:  # something is left to autotune on every target
            assert any(r["fits"] for r in mine if r["kernel"] == k), (cc, k)


def test_the_configs_dropped_per_target_are_the_ones_that_do_not_fit(reports):
    from edgeprm.kernels.aot import TABLE, TARGETS

    dropped = {TARGETS[cc][0]: sorted(f"{r['kernel']}:{r['config']}" for r in reports
                                      if r["target"] == cc and not r["fits"]) for cc in TARGETS}
    committed = json.loads(TABLE.read_text())
    assert {k: sorted(v) for k, v in committed["dropped"].items()} == dropped, (
        "the compile results changed (a new Triton, or new configs): rerun `python -m edgeprm.kernels.aot --write`")
    # T4 with fp16: every tile above 16x32 and 32x64 spills there (the reason this table exists).
    assert dropped["sm_75"] and not dropped["sm_90"]
    spilled = [r for r in reports if r["stack_bytes"] > 0]
    assert all(not r["fits"] for r in spilled)


def test_prune_keeps_only_what_fits_the_gpu(monkeypatch):
    import torch

    from edgeprm.kernels import _step_head_triton as tk
    from edgeprm.kernels.aot import config_name

    class Cfg:  # the shape of a triton.Config: kwargs, num_warps, num_stages
        def __init__(self, m, k, n, w, s):
            self.kwargs, self.num_warps, self.num_stages = {"BLOCK_M": m, "BLOCK_K": k, "BLOCK_N": n}, w, s

    small, big = Cfg(16, 64, 32, 4, 2), Cfg(128, 64, 128, 8, 4)
    monkeypatch.setattr(tk, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    prune = tk.prune_configs("classifier_partials")["early_config_prune"]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert config_name(big) in {n.split(":", 1)[1] for n in tk._dropped_on((7, 5))}
    assert prune([small, big], {}) == [small]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert prune([small, big], {}) == [small, big]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (12, 0))  # unknown: keep everything
    assert prune([small, big], {}) == [small, big]
