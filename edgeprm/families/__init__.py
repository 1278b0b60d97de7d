"""The PRM families, one declaration each (`edgeprm.families.base.PRMFamily`), and their detection.

| family | module | checkpoints |
|---|---|---|
| `step-classifier` | `step_classifier.py` | Qwen2.5-Math-PRM-7B/72B, ReasonFlux-PRM-7B |
| `value-head` | `value_head.py` | ReasonFlux-PRM-1.5B |
| `token-prob` | `token_prob.py` | Math-Shepherd-style PRMs |

Torch-free: shared by the torch and ONNX backends.
"""

from __future__ import annotations

from pathlib import Path

from edgeprm.families.base import FAMILIES, Family, PRMFamily
from edgeprm.families.step_classifier import StepClassifier
from edgeprm.families.token_prob import TokenProb, TokenProbSpec
from edgeprm.families.value_head import ValueHead

# Detection order: the first family whose `detect` accepts a directory is its family.
REGISTRY: dict[Family, PRMFamily] = {f.family: f for f in (StepClassifier(), ValueHead(), TokenProb())}
assert tuple(REGISTRY) == tuple(Family), "every Family needs its declaration in REGISTRY"


def parse_family(family, where: str = "family") -> Family:
    try:
        return Family(family)
    except ValueError:
        raise ValueError(f"{where} must be one of {FAMILIES}; got {family!r}") from None


def get_family(family) -> PRMFamily:
    """The declaration of a family given by name or `Family`."""
    return REGISTRY[parse_family(family)]


def detect_family(model_dir: Path, config: dict, weights) -> PRMFamily:
    """The family from the files: edgeprm's own config section, else the first declaration that recognises them."""
    declared = (config.get("edgeprm") or {}).get("family")
    if declared:
        return REGISTRY[parse_family(declared, f"{model_dir / 'config.json'} ('edgeprm.family')")]
    for fam in REGISTRY.values():
        if fam.detect(model_dir, config, weights):
            return fam
    archs = config.get("architectures") or []
    layouts = [f.layout for f in REGISTRY.values()]
    raise ValueError(
        f"{model_dir} is none of the supported PRM layouts: expected {', '.join(layouts[:-1])}, or {layouts[-1]}; "
        f"found architectures={archs}. Pass family=one of {FAMILIES} to choose one.")


__all__ = ["FAMILIES", "REGISTRY", "Family", "PRMFamily", "TokenProbSpec", "detect_family", "get_family",
           "parse_family"]
