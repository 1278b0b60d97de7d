"""Scoring backends behind one door: `edgeprm.load` picks one by `ScorerConfig.backend`.

| backend | module | runs | loads |
|---|---|---|---|
| `torch` | `torch.py` | transformers' backbone + the fused step head (Triton on CUDA) | checkpoints (also quantized) |
| `onnx` | `onnx.py` | ONNX Runtime, no torch or transformers | bundles written by `edgeprm export` |

Both subclass `base.ScorerBase` (input handling, batching, padding, results). Each backend module exposes
`load(model, config) -> scorer`; it is imported only when chosen, so the ONNX path never imports torch.
"""

from __future__ import annotations

import importlib

from edgeprm.config import BACKENDS

LOADERS = {"torch": "edgeprm.backends.torch", "onnx": "edgeprm.backends.onnx"}
assert tuple(LOADERS) == BACKENDS


def load_backend(model, config):
    """The scorer of `config.backend` for `model` (see each backend's `load`)."""
    return importlib.import_module(LOADERS[config.backend]).load(model, config)
