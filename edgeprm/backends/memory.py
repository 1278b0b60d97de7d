"""Memory of a loaded scorer: bytes of its weights per component, and the peak RSS of load + scoring.

`weight_bytes(scorer)` counts what each module holds, quantized storage and its scales included (edgeprm.quant's
modules and bitsandbytes' report theirs). `measure_peak_rss(model, quantization)` loads and scores one trajectory in
a fresh Python process and returns its high-water mark, so figures never mix with the caller's memory.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

COMPONENTS = ("embeddings", "attention", "mlp", "norms", "other", "head")


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _quant_state_bytes(qs) -> int:
    if qs is None:
        return 0
    return (_nbytes(getattr(qs, "absmax", None)) + _nbytes(getattr(qs, "code", None))
            + _quant_state_bytes(getattr(qs, "state2", None)))


def module_bytes(m: nn.Module) -> int:
    """Bytes held by one module's own tensors, quantized storage and its scales included."""
    if hasattr(m, "storage_bytes"):
        return m.storage_bytes()
    n = sum(_nbytes(t) for t in m.parameters(recurse=False)) + sum(_nbytes(t) for t in m.buffers(recurse=False))
    w = getattr(m, "weight", None)
    n += _quant_state_bytes(getattr(w, "quant_state", None))  # bitsandbytes NF4
    state = getattr(m, "state", None)  # bitsandbytes int8: the row scales live on the weight or the matmul state
    n += _nbytes(getattr(w, "SCB", None)) or _nbytes(getattr(state, "SCB", None))
    return n


def component_of(name: str) -> str:
    for key, comp in (("embed", "embeddings"), ("attn", "attention"), ("mlp", "mlp"), ("norm", "norms")):
        if key in name:
            return comp
    return "other"


def weight_bytes(scorer) -> dict[str, int]:
    """Bytes of the scorer's weights per component (embeddings, attention, mlp, norms, other, head) and 'total'."""
    out = dict.fromkeys(COMPONENTS, 0)
    for name, m in scorer.backbone.named_modules():
        out[component_of(name)] += module_bytes(m)
    h = scorer.head
    out["head"] = sum(_nbytes(t) for t in (h.w1, h.b1, h.w2, h.b2))
    out["total"] = sum(out[c] for c in COMPONENTS)
    return out


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's resident high-water mark since exec: VmHWM. Not ru_maxrss: Linux carries the parent's RSS
    at fork into the child's ru_maxrss across exec, so a child of a big process would report the parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def filler_trajectory(scorer, tokens: int):
    """A plain arithmetic trajectory of at least `tokens` tokens for this scorer's encoder."""
    from edgeprm.trajectory import Trajectory

    problem = "A shop sells 12 boxes of 7 apples each day. How many apples does it sell in a week?"
    steps: list[str] = []
    while True:
        i = len(steps)
        steps.append(f"Step {i + 1}: {12 + i} * {i % 9 + 2} = {(12 + i) * (i % 9 + 2)}, so we add it to the total.")
        traj = Trajectory(problem, steps)
        if len(scorer.encoder.encode(traj, False).ids) >= tokens:
            return traj


def _rss_child(spec: dict) -> None:
    import time

    from edgeprm.backends import load_backend
    from edgeprm.config import ScorerConfig

    import_rss = _rss_now()
    t0 = time.perf_counter()
    scorer = load_backend(spec["model"], ScorerConfig.from_options(quantization=spec["quantization"], **spec["load"]))
    load_s = time.perf_counter() - t0
    if spec["resident_embeddings"]:
        # Weights read from safetensors are lazy file mappings: only the rows of token ids in use become resident.
        # Reading the whole table counts it as a real vocabulary's working set eventually would.
        for m in scorer.backbone.modules():
            if isinstance(m, nn.Embedding):
                for rows in m.weight.split(4096):  # in slices: no full-size temporary
                    rows.sum(dtype=torch.float32)
    load_rss = _rss_now()
    traj = filler_trajectory(scorer, spec["tokens"])
    n = len(scorer.encoder.encode(traj, False).ids)
    t0 = time.perf_counter()
    first = scorer.score_batch([traj])[0]
    first_s = time.perf_counter() - t0
    warm = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        scorer.score_batch([traj])
        warm.append(time.perf_counter() - t0)
    print(json.dumps({"quantization": spec["quantization"], "peak_rss": _peak_rss(), "import_rss": import_rss,
                      "load_rss": load_rss, "load_s": load_s, "first_score_s": first_s, "tokens": n,
                      "tokens_per_s": n / min(warm) if warm else n / first_s, "score": first.score,
                      "weight_bytes": weight_bytes(scorer)}))


def measure_peak_rss(model=None, quantization: str | None = None, tokens: int = 512, repeats: int = 2,
                     timeout: float | None = None, resident_embeddings: bool = False, **load_kw) -> dict:
    """Load `model` and score one `tokens`-token trajectory in a fresh Python process; return its figures (Linux).

    peak_rss: the process's high-water mark in bytes (VmHWM: interpreter and imports included); import_rss:
    resident bytes after the imports, before loading; load_rss: after loading; tokens_per_s: best of `repeats` warm
    calls. resident_embeddings: read the whole embedding table after loading, so that a small test tokenizer that
    touches few rows of a lazily mapped table does not flatter the figure. `load_kw` go to `edgeprm.load` and must
    be JSON values (dtype="bfloat16", device="cpu", ...).
    """
    import subprocess
    import sys

    spec = {"model": None if model is None else str(model), "quantization": quantization, "tokens": tokens,
            "repeats": repeats, "resident_embeddings": resident_embeddings, "load": load_kw}
    code = "import json, sys; from edgeprm.backends.memory import _rss_child; _rss_child(json.loads(sys.argv[1]))"
    r = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"the measuring process failed with exit code {r.returncode}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def format_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
