"""The PRM families, their options and the aggregations: plain Python, shared by the torch and ONNX backends."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Family(str, enum.Enum):
    STEP_CLASSIFIER = "step-classifier"
    VALUE_HEAD = "value-head"
    TOKEN_PROB = "token-prob"


FAMILIES = tuple(f.value for f in Family)


class Aggregation(str, enum.Enum):
    MEAN = "mean"
    MIN = "min"
    LAST = "last"
    PROD = "prod"
    REASONFLUX = "reasonflux"


AGGREGATIONS = tuple(a.value for a in Aggregation)

# The score each family reports unless told otherwise: the value-head PRM's paper recipe, and the weakest step for
# the per-step families (one bad step sinks a solution).
DEFAULT_AGGREGATION = {Family.STEP_CLASSIFIER: "min", Family.VALUE_HEAD: "reasonflux", Family.TOKEN_PROB: "min"}
# The value-head reference truncates at 2048 tokens; the others are bounded by their position embeddings.
FAMILY_MAX_LENGTH = {Family.VALUE_HEAD: 2048}


@dataclass(frozen=True)
class TokenProbSpec:
    """How a token-prob PRM marks steps and reads its verdict: a step tag and a good/bad token pair."""

    step_tag: str = " ки"
    good_token: str = "+"
    bad_token: str = "-"


def parse_family(family, where: str = "family") -> Family:
    try:
        return Family(family)
    except ValueError:
        raise ValueError(f"{where} must be one of {FAMILIES}; got {family!r}") from None


def check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}; got {aggregation!r}")
    return aggregation


def token_prob_spec_from(config: dict, step_tag=None, good_token=None, bad_token=None) -> TokenProbSpec:
    """The token-prob options: explicit arguments, else config.json's 'edgeprm' section, else the defaults."""
    section = config.get("edgeprm") or {}
    default = TokenProbSpec()
    return TokenProbSpec(
        step_tag=step_tag or section.get("step_tag") or default.step_tag,
        good_token=good_token or section.get("good_token") or default.good_token,
        bad_token=bad_token or section.get("bad_token") or default.bad_token,
    )
