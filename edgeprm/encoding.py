"""Per-family encoding: a Trajectory -> token ids + one checked token position per step.

Each family follows its reference recipe (DESIGN.md) to the character; where its positions are is the family's own
declaration (`edgeprm.families`: the `<extra_0>` separators of a step-classifier, the token holding each step's last
character for a value-head, the step tags of a token-prob PRM). Positions are located at the token level from the
tokenizer's offsets (or the separator's id) and verified, never assumed. This module adds what every family shares:
the final response as one more segment (it gives the trajectory reward), the check that steps end in distinct
tokens, and the length limit with its truncation policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprm.families import PRMFamily, get_family
from edgeprm.tokenizer import PRMTokenizer
from edgeprm.trajectory import DEFAULT_SPLIT, Trajectory


@dataclass(frozen=True)
class Encoded:
    """Token ids and positions of one trajectory. Positions of steps cut by truncation are None."""

    ids: tuple[int, ...]
    step_positions: tuple[int | None, ...]
    final_position: int | None
    truncated: bool = False
    full_length: int = 0

    @property
    def scored_positions(self) -> list[int]:
        return [p for p in self.step_positions if p is not None]


class TooLongError(ValueError):
    """A trajectory longer than the model's limit (with truncation off)."""


class Encoder:
    """Turns Trajectories into `Encoded` for one family, tokenizer and set of the family's options."""

    def __init__(self, family: PRMFamily | str, tokenizer: PRMTokenizer, max_length: int, split: str = DEFAULT_SPLIT,
                 options=None):
        self.declaration = family if isinstance(family, PRMFamily) else get_family(family)
        self.family = self.declaration.family
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.split = split
        self.options = options if options is not None else self.declaration.options({}, {})
        self.positions = self.declaration.bind(tokenizer, self.options, split)

    @classmethod
    def from_checkpoint(cls, model_dir) -> Encoder:
        """The encoder `edgeprm.load(model_dir)` uses with default options (detected family, its tokenizer and
        limit), without loading any weights."""
        from edgeprm.families import detect_family
        from edgeprm.loading import SafetensorsCheckpoint, read_config

        config = read_config(model_dir)
        fam = detect_family(model_dir, config, SafetensorsCheckpoint(model_dir))
        return cls(fam, PRMTokenizer.from_dir(model_dir), fam.max_length(config), options=fam.options(config, {}))

    def __getattr__(self, name: str):
        # The family's own state (sep_id of a step-classifier, tag_id of a token-prob PRM) reads through.
        if name == "positions":
            raise AttributeError(name)
        return getattr(self.positions, name)

    def encode(self, traj: Trajectory, truncate: bool = False) -> Encoded:
        segments = list(traj.steps) + ([traj.response] if traj.response is not None else [])
        ids, positions, final = self.positions.locate(traj, segments)
        if any(b <= a for a, b in zip(positions, positions[1:])):
            i = next(k for k, (a, b) in enumerate(zip(positions, positions[1:])) if b <= a)
            raise ValueError(f"steps {i} and {i + 1} of id {traj.id!r} end in the same token; merge them or change "
                             "the split")
        step_positions = positions[: len(traj.steps)]
        n = len(ids)
        if n <= self.max_length:
            return Encoded(tuple(ids), tuple(step_positions), final, False, n)
        if not truncate:
            raise TooLongError(
                f"trajectory {traj.id!r} is {n} tokens long, over the model's limit of {self.max_length} tokens; "
                "shorten it, raise max_length if the model allows, or pass truncate=True to score the steps that fit")
        keep = self.max_length
        return Encoded(tuple(ids[:keep]), tuple(p if p < keep else None for p in step_positions),
                       final if final < keep else None, True, n)
