"""Trajectories: a problem, its reasoning steps and an optional final response; parsing of the input formats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_SPLIT = "\n\n"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Inserted after the first character of a reserved string found in user text, so that it stays visible to the
# model as ordinary text but can no longer tokenize as a separator, a step tag or a chat-template token.
NEUTRALISER = "\u200b"


def _where(row_id) -> str:
    return f" for id {row_id!r}" if row_id is not None else ""


@dataclass(frozen=True)
class Trajectory:
    """A problem, its reasoning steps (non-empty strings, in order) and an optional final response."""

    problem: str
    steps: tuple[str, ...]
    response: str | None = None
    id: str | None = None

    def __post_init__(self):
        if isinstance(self.steps, str):
            raise ValueError(f"steps must be a list of strings, not one string{_where(self.id)}; "
                             "use Trajectory.from_solution(problem, solution) to split a solution")
        object.__setattr__(self, "steps", tuple(self.steps))
        check_problem(self.problem, self.id)
        if not self.steps:
            raise ValueError(f"steps must be a non-empty list of strings; got 0 steps{_where(self.id)}")
        for i, s in enumerate(self.steps):
            if not isinstance(s, str) or not s.strip():
                raise ValueError(f"step {i} is empty{_where(self.id)}: every step must be a non-empty string; "
                                 f"got {s!r}")
        if self.response is not None and (not isinstance(self.response, str) or not self.response.strip()):
            raise ValueError(f"response must be a non-empty string or None{_where(self.id)}; got {self.response!r}")

    @classmethod
    def from_solution(cls, problem: str, solution: str, split: str = DEFAULT_SPLIT, response: str | None = None,
                      id: str | None = None) -> Trajectory:
        """Split a solution string into steps on `split` (a blank line by default).

        `split.join(steps) == solution` always holds, so a value-head PRM scores a split solution exactly as it
        scores the unsplit text: whitespace-only pieces are kept inside the following step, not dropped.
        """
        if not isinstance(solution, str) or not solution.strip():
            raise ValueError(f"solution must be a non-empty string{_where(id)}; got {solution!r}")
        return cls(problem, split_steps(solution, split), response, id)

    @classmethod
    def from_r1(cls, problem: str, text: str, split: str = DEFAULT_SPLIT, id: str | None = None) -> Trajectory:
        """Parse R1-style output `<think>thinking</think>answer`: thinking steps + the answer as the response.

        The opening `<think>` may be missing (templates that put it in the prompt); `</think>` is required.
        """
        if THINK_CLOSE not in text:
            raise ValueError(f"R1-style text must contain {THINK_CLOSE}{_where(id)}; got {text[:80]!r}...")
        thinking, _, answer = text.partition(THINK_CLOSE)
        start = thinking.find(THINK_OPEN)
        if start >= 0:
            thinking = thinking[start + len(THINK_OPEN):]
        thinking = thinking.strip()
        if not thinking:
            raise ValueError(f"the <think> block is empty{_where(id)}: no steps to score")
        answer = answer.strip()
        return cls(problem, split_steps(thinking, split), answer or None, id)

    @classmethod
    def from_dict(cls, row: Mapping, split: str = DEFAULT_SPLIT) -> Trajectory:
        """Build from an input row: {"id"?, "problem", "steps": [...]} or {"id"?, "problem", "solution": "..."},
        optional "response"."""
        if not isinstance(row, Mapping):
            raise ValueError(f"a row must be a JSON object; got {type(row).__name__}")
        row_id = row.get("id")
        row_id = None if row_id is None else str(row_id)
        if "problem" not in row:
            raise ValueError(f"row{_where(row_id)} has no 'problem' field; expected keys 'problem' and 'steps' "
                             "or 'solution'")
        response = row.get("response")
        if "steps" in row:
            steps = row["steps"]
            if not isinstance(steps, Sequence) or isinstance(steps, str):
                raise ValueError(f"'steps' must be a list of strings{_where(row_id)}; got {type(steps).__name__}")
            return cls(row["problem"], tuple(steps), response, row_id)
        if "solution" in row:
            return cls.from_solution(row["problem"], row["solution"], split, response, row_id)
        raise ValueError(f"row{_where(row_id)} has neither 'steps' nor 'solution'")


def check_problem(problem, row_id=None) -> None:
    """A problem must be a non-empty string: ValueError naming the row otherwise."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"problem must be a non-empty string{_where(row_id)}; got {problem!r}")


def split_steps(solution: str, split: str = DEFAULT_SPLIT) -> tuple[str, ...]:
    """Split on `split`, folding whitespace-only pieces into the next step so that `split.join` restores the text."""
    if not split:
        raise ValueError("the step separator must be a non-empty string")
    steps: list[str] = []
    carry = ""
    for piece in solution.split(split):
        cur = carry + piece
        if not cur.strip():
            carry = cur + split
            continue
        steps.append(cur)
        carry = ""
    if carry and steps:
        steps[-1] += split + carry[: -len(split)]
    return tuple(steps)


def as_trajectory(item, split: str = DEFAULT_SPLIT) -> Trajectory:
    """Accept a Trajectory or a row dict."""
    if isinstance(item, Trajectory):
        return item
    return Trajectory.from_dict(item, split)


def neutralise(text: str, reserved: Sequence[str]) -> str:
    """Break every occurrence of a reserved string (separator, step tag, template token) in user text."""
    for r in sorted(reserved, key=len, reverse=True):
        if r and r in text:
            text = text.replace(r, r[0] + NEUTRALISER + r[1:]) if len(r) > 1 else text.replace(r, NEUTRALISER)
    return text
