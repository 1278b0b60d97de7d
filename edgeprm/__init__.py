"""edgeprm: process-reward-model scoring on small hardware.

    scorer = edgeprm.load("path/or/hub-id")
    r = scorer.score(problem, ["step 1", "step 2"])
    r.step_rewards, r.trajectory_reward, r.score

`import edgeprm` does not import torch: the ONNX backend runs where only onnxruntime, tokenizers and numpy exist.
"""

from edgeprm.families import AGGREGATIONS, FAMILIES, Family, TokenProbSpec
from edgeprm.results import ScoreResult
from edgeprm.trajectory import Trajectory

__version__ = "0.1.0"
__all__ = ["AGGREGATIONS", "FAMILIES", "Family", "ScoreResult", "Scorer", "TokenProbSpec", "Trajectory", "load",
           "__version__"]


def load(model=None, quantization=None, backend="torch", device="auto", **options):
    """Load a PRM and return its scorer (see `edgeprm.scorer.load` for every option).

    backend="onnx" loads an exported bundle with the torch-free runtime (`edgeprm.export.runtime.load_onnx`).
    """
    if backend == "onnx":
        from edgeprm.export.runtime import load_onnx

        return load_onnx(model, quantization=quantization, device=device, **options)
    from edgeprm.scorer import load as _load

    return _load(model, quantization, backend, device, **options)


def __getattr__(name):
    if name == "Scorer":
        from edgeprm.scorer import Scorer

        return Scorer
    raise AttributeError(f"module 'edgeprm' has no attribute {name!r}")
