"""edgeprm: process-reward-model scoring on small hardware.

    scorer = edgeprm.load("path/or/hub-id")
    r = scorer.score(problem, ["step 1", "step 2"])
    r.step_rewards, r.trajectory_reward, r.score

`import edgeprm` does not import torch: the ONNX backend runs where only onnxruntime, tokenizers and numpy exist.
"""

from edgeprm.aggregation import AGGREGATIONS
from edgeprm.config import ScorerConfig
from edgeprm.families import FAMILIES, Family, TokenProbSpec
from edgeprm.results import ScoreResult
from edgeprm.trajectory import Trajectory

__version__ = "0.1.0"
__all__ = ["AGGREGATIONS", "FAMILIES", "Family", "ScoreResult", "Scorer", "ScorerConfig", "TokenProbSpec",
           "Trajectory", "load", "__version__"]


def load(model=None, quantization=None, backend="torch", device="auto", *, config: ScorerConfig | None = None,
         **options):
    """Load a PRM and return its scorer: the one place a backend is chosen.

    model: a checkpoint directory or hub id (torch; None = the bundled demo PRM), or an exported bundle directory
    (backend="onnx"). Every option is a `ScorerConfig` field (family, dtype, aggregation, alpha, max_length,
    truncate, split, step_tag, good_token, bad_token, token_budget, max_batch_size, padding_side, revision,
    threads); `config=` passes a whole ScorerConfig, keywords override its fields. An option the backend does not
    have is an error that names it.
    """
    from edgeprm.backends import load_backend

    given = {"quantization": quantization, "backend": backend, "device": device}
    if config is not None:  # the positional options override the config only where they were passed
        given = {**config.to_options(), **{k: v for k, v in given.items() if v != ScorerConfig.DEFAULTS[k]}}
    return load_backend(model, ScorerConfig.from_options(**{**given, **options}))


def __getattr__(name):
    if name == "Scorer":
        from edgeprm.backends.torch import Scorer

        return Scorer
    raise AttributeError(f"module 'edgeprm' has no attribute {name!r}")
