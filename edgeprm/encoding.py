"""Per-family encoding: a Trajectory -> token ids + one checked token position per step.

Each family follows its reference recipe (DESIGN.md) to the character, and step positions are located at the
token level from the tokenizer's offsets (or the separator's id) and verified, never assumed:
- step-classifier: chat template with `<extra_0>` after every step; the position is that separator token.
- value-head: raw `problem + split.join(steps)`; the position is the token holding each step's last character, so
  the last step's reward is the value at the last real token (the reference trajectory score).
- token-prob: `problem + " " + "\n".join(step + tag)`; the position is the step tag token.
A final response, when given, is scored as one more segment and gives the trajectory reward.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from edgeprm.families import Family, TokenProbSpec
from edgeprm.tokenizer import PRMTokenizer
from edgeprm.trajectory import DEFAULT_SPLIT, Trajectory, neutralise

SEP_TOKEN = "<extra_0>"
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


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


def _token_at(starts: list[int], offsets: list[tuple[int, int]], char: int) -> int:
    """Index of the last token whose character span holds `char` (byte-level tokens may share a character)."""
    i = bisect.bisect_right(starts, char) - 1
    while i >= 0 and offsets[i][0] == offsets[i][1]:  # special tokens have empty spans
        i -= 1
    if i < 0 or not offsets[i][0] <= char < offsets[i][1]:
        raise AssertionError(f"no token holds character {char}")
    return i


class Encoder:
    """Turns Trajectories into `Encoded` for one family and tokenizer."""

    def __init__(self, family: Family, tokenizer: PRMTokenizer, max_length: int, split: str = DEFAULT_SPLIT,
                 token_prob: TokenProbSpec | None = None, system_prompt: str = SYSTEM_PROMPT):
        self.family = Family(family)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.split = split
        self.system_prompt = system_prompt
        self.reserved = tokenizer.added_tokens
        if self.family is Family.STEP_CLASSIFIER:
            self.sep_id = tokenizer.token_id(SEP_TOKEN)
            if self.sep_id is None:
                raise ValueError(f"the tokenizer has no {SEP_TOKEN!r} token, which a step-classifier PRM needs")
            if not tokenizer.chat_template:
                raise ValueError("a step-classifier PRM's tokenizer needs a chat template (tokenizer_config.json "
                                 "'chat_template')")
        elif self.family is Family.TOKEN_PROB:
            self.spec = token_prob or TokenProbSpec()
            self.tag_id = tokenizer.single_token_id(self.spec.step_tag, "step tag")
            self.reserved.append(self.spec.step_tag.strip())

    def encode(self, traj: Trajectory, truncate: bool = False) -> Encoded:
        segments = list(traj.steps) + ([traj.response] if traj.response is not None else [])
        if self.family is Family.STEP_CLASSIFIER:
            ids, positions = self._classifier(traj, segments)
            final = positions[-1]
        elif self.family is Family.TOKEN_PROB:
            ids, positions = self._token_prob(traj, segments)
            final = positions[-1]
        else:
            ids, positions = self._value_head(traj, segments)
            final = len(ids) - 1
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

    def _classifier(self, traj: Trajectory, segments: list[str]):
        problem = neutralise(traj.problem, self.reserved)
        body = "".join(neutralise(s, self.reserved) + SEP_TOKEN for s in segments)
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": problem},
                    {"role": "assistant", "content": body}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=False)
        ids, _ = self.tokenizer.encode(text)
        positions = [i for i, t in enumerate(ids) if t == self.sep_id]
        if len(positions) != len(segments):
            raise AssertionError(f"{len(positions)} separator tokens for {len(segments)} segments in {traj.id!r}")
        return ids, positions

    def _token_prob(self, traj: Trajectory, segments: list[str]):
        tag = self.spec.step_tag
        text = neutralise(traj.problem, self.reserved) + " "
        spans = []
        for i, seg in enumerate(segments):
            if i:
                text += "\n"
            text += neutralise(seg, self.reserved)
            spans.append((len(text), len(text) + len(tag)))
            text += tag
        ids, offsets = self.tokenizer.encode(text)
        starts = [o[0] for o in offsets]
        positions = []
        for k, (_, b) in enumerate(spans):
            p = _token_at(starts, offsets, b - 1)
            if ids[p] != self.tag_id:
                raise ValueError(f"step {k} of id {traj.id!r}: the step tag {tag!r} merged with the text around it "
                                 f"(token id {ids[p]}); end the step with "
                                 "a space or punctuation")
            positions.append(p)
        return ids, positions

    def _value_head(self, traj: Trajectory, segments: list[str]):
        text = traj.problem
        ends = []
        for i, seg in enumerate(segments):
            if i:
                text += self.split
            text += seg
            ends.append(len(text))
        ids, offsets = self.tokenizer.encode(text)
        starts = [o[0] for o in offsets]
        return ids, [_token_at(starts, offsets, e - 1) for e in ends]
