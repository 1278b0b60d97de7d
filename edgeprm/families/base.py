"""What a PRM family declares (`PRMFamily`), and the shared pieces its declarations use.

A family says how it is detected from a checkpoint's files, how its reward head loads (as `StepHeadWeights`, the
one head the fused step head applies), where its step positions are in the token ids of a trajectory, which
tensors its head reads, its default aggregation and its length limit. The scorers, the exporter and the quantizer
ask the family; none of them branches on which family it is. A new family is one module here plus its line in
`edgeprm.families.REGISTRY` and in `Family`.

Torch-free at import: heads are loaded with torch imported inside `load_head`, so the ONNX backend can use the
families' encoding side on a machine without torch.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping
from pathlib import Path


class Family(str, enum.Enum):
    STEP_CLASSIFIER = "step-classifier"
    VALUE_HEAD = "value-head"
    TOKEN_PROB = "token-prob"


FAMILIES = tuple(f.value for f in Family)


def token_at(starts: list[int], offsets: list[tuple[int, int]], char: int) -> int:
    """Index of the last token whose character span holds `char` (byte-level tokens may share a character)."""
    i = bisect.bisect_right(starts, char) - 1
    while i >= 0 and offsets[i][0] == offsets[i][1]:  # special tokens have empty spans
        i -= 1
    if i < 0 or not offsets[i][0] <= char < offsets[i][1]:
        raise AssertionError(f"no token holds character {char}")
    return i


class PRMFamily:
    """One PRM family's declaration. Subclasses set the class attributes and implement the methods below."""

    family: Family
    layout: str  # the on-disk layout, for the error when no family matches a directory
    default_aggregation: str
    length_limit: int | None = None  # a cap below the position embeddings, where the reference recipe has one
    option_names: tuple[str, ...] = ()  # ScorerConfig fields that configure this family (and only this one)

    def __str__(self) -> str:
        return self.family.value

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def detect(self, model_dir: Path, config: dict, weights) -> bool:
        """Whether a checkpoint directory is of this family (`weights`: its `SafetensorsCheckpoint`)."""
        raise NotImplementedError

    def load_head(self, model_dir: Path, config: dict, weights, tokenizer, options, hidden: int):
        """The reward head as `edgeprm.kernels.step_head.StepHeadWeights` (fp32), checked against `hidden`."""
        raise NotImplementedError

    def head_tensor_keys(self, config: dict, weights) -> tuple[str, ...]:
        """Checkpoint tensors the head reads (besides files of its own): a quantized checkpoint keeps them."""
        return ()

    def max_length(self, config: dict, override: int | None = None) -> int:
        """Token limit: the override, else the position embeddings capped by the family's own limit."""
        if override is not None:
            return override
        limit = config.get("max_position_embeddings") or 4096
        return min(limit, self.length_limit or limit)

    # -- encoding ---------------------------------------------------------------------------------------------------
    def options(self, config: dict, overrides: Mapping[str, object]):
        """The family's encoding options (None when it has none) from explicit overrides, else config.json."""
        return None

    def encoding_record(self, options) -> dict:
        """What an exported bundle records of the options (read back by `options_from_record`)."""
        return {}

    def options_from_record(self, record: Mapping):
        return None

    def bind(self, tokenizer, options, split: str):
        """Check the tokenizer and return the family's positions object: `.locate(trajectory, segments) ->
        (ids, positions, final_position)`, one position per segment (the steps, then the response if given)."""
        raise NotImplementedError


def check_head(name: str, source: str, t, shape: tuple[int, ...]):
    """A head tensor as fp32, after checking its shape (torch tensors; imported by the families' `load_head`)."""
    if tuple(t.shape) != shape:
        raise ValueError(f"{source}: {name} has shape {tuple(t.shape)}, expected {shape} for hidden size "
                         f"{shape[-1]} of the backbone")
    return t.float()
