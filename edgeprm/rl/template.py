"""How a trajectory (problem, steps, final response) is recovered from the text an RL framework hands a reward.

RL frameworks pass text, not rows: TRL passes each prompt and completion (strings, or chat messages in its
conversational format); OpenRLHF's remote reward model receives `query` = prompt + response as one string, and the
prompts beside it; verl passes the decoded response and the dataset row's `extra_info`. `QueryTemplate` is the one
documented, configurable place that says how the problem and the steps are found in that text (torch-free):

1. the response: the query minus its prompt when the prompt is given (the query must start with it); otherwise the
   text after the last match of `response_marker` (default: the ChatML assistant header `<|im_start|>assistant\\n`);
   with neither, the query is an error that says which option to set.
2. end-of-turn and padding tokens at the end of the response (`strip_tokens`) are dropped.
3. the problem: group 1 of the last match of `problem_pattern` in the prompt (default: the last ChatML user turn); a
   prompt it does not match is the problem itself (a plain-text prompt). Chat messages: the last user message.
4. the steps: the response split on `split` (a blank line by default), or with `think=True` the R1 format: the
   steps of the `<think>` block, and the text after `</think>` as the final response. A response cut off before
   `</think>` (the generation hit its length limit) is scored as steps with no final response.

A response with no text at all has no steps to score: `parse` returns no trajectory and the reward functions give
it their `empty_reward`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from edgeprm.trajectory import DEFAULT_SPLIT, THINK_CLOSE, THINK_OPEN, Trajectory, split_steps

CHATML_USER = r"<\|im_start\|>user\n(.*?)<\|im_end\|>"
CHATML_ASSISTANT = r"<\|im_start\|>assistant\n"
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")


@dataclass(frozen=True)
class Parsed:
    """A response read with a `QueryTemplate`: the trajectory (None for a response with no text) and, per segment
    (each step, then the final response if any), its (start, end) character span in the response as given."""

    trajectory: Trajectory | None
    spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class QueryTemplate:
    """Where the problem, the steps and the final response are in prompt/response text (see the module docstring).

    problem_pattern: regex whose group 1, at its last match in the prompt, is the problem (None: the whole prompt).
    response_marker: regex whose last match ends the prompt inside a query given without its prompt (None: prompts
        must be given). strip_tokens: dropped from the end of a response. split: the step separator. think: the
        response is R1-style `<think>steps</think>answer`.
    """

    problem_pattern: str | None = CHATML_USER
    response_marker: str | None = CHATML_ASSISTANT
    strip_tokens: tuple[str, ...] = END_TOKENS
    split: str = DEFAULT_SPLIT
    think: bool = False
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "strip_tokens", tuple(self.strip_tokens))
        for name in ("problem_pattern", "response_marker"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                self._compiled[name] = re.compile(value, re.DOTALL)
            except (re.error, TypeError) as e:
                raise ValueError(f"{name} must be a regular expression; {value!r} is not ({e})") from None
        problem = self._compiled.get("problem_pattern")
        if problem is not None and problem.groups < 1:
            raise ValueError(f"problem_pattern must have a group that captures the problem; {self.problem_pattern!r} "
                             "has none (wrap the problem's part in parentheses)")
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split must be a non-empty string; got {self.split!r}")
        if any(not isinstance(t, str) or not t for t in self.strip_tokens):
            raise ValueError(f"strip_tokens must be non-empty strings; got {self.strip_tokens!r}")

    def replace(self, **changes) -> QueryTemplate:
        return QueryTemplate(**{**{f.name: getattr(self, f.name) for f in fields(self) if f.init}, **changes})

    # -- the pieces ------------------------------------------------------------------------------------------------
    def split_query(self, query: str, prompt: str | None = None, where: str = "query") -> tuple[str, str]:
        """(prompt, response) of a query that is prompt + response text."""
        if not isinstance(query, str):
            raise ValueError(f"{where} must be a string; got {type(query).__name__}")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ValueError(f"the prompt of {where} must be a string; got {type(prompt).__name__}")
            if not query.startswith(prompt):
                raise ValueError(f"{where} does not start with its prompt: the query must be the prompt followed by "
                                 "the response, as the policy generated it")
            return prompt, query[len(prompt):]
        marker = self._compiled.get("response_marker")
        if marker is None:
            raise ValueError(f"{where} came without its prompt and the template has no response_marker: send the "
                             "prompts, or set a response_marker that ends every prompt")
        matches = list(marker.finditer(query))
        if not matches:
            raise ValueError(f"{where} has no match of the response marker {self.response_marker!r}: send the "
                             "prompts, or set the marker the policy's chat template puts before the response")
        end = matches[-1].end()
        return query[:end], query[end:]

    def problem_of(self, prompt) -> str:
        """The problem in a prompt: a string (see `problem_pattern`) or chat messages (the last user message)."""
        if isinstance(prompt, str):
            pattern = self._compiled.get("problem_pattern")
            matches = list(pattern.finditer(prompt)) if pattern is not None else []
            return (matches[-1].group(1) if matches else prompt).strip()
        if isinstance(prompt, Sequence):
            users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
            if not users:
                raise ValueError("a conversational prompt needs a message with role 'user' (the problem); got roles "
                                 f"{[m.get('role') for m in prompt if isinstance(m, Mapping)]}")
            return message_text(users[-1]).strip()
        raise ValueError(f"a prompt must be a string or a list of chat messages; got {type(prompt).__name__}")

    def response_text(self, response: str) -> str:
        """The response without the end-of-turn and padding tokens at its end."""
        text = response
        changed = True
        while changed:  # e.g. "<|im_end|><|endoftext|><|endoftext|>" and whitespace between them
            changed = False
            stripped = text.rstrip()
            for token in self.strip_tokens:
                if stripped.endswith(token):
                    text, changed = stripped[: -len(token)], True
        return text

    def parse(self, problem: str, response: str, id: str | None = None) -> Parsed:
        """The trajectory of one response to `problem`, with each segment's span in `response` (see `Parsed`)."""
        if not isinstance(response, str):
            raise ValueError(f"a response must be a string{_where(id)}; got {type(response).__name__}")
        text = self.response_text(response)
        if not text.strip():
            return Parsed(None)
        final = None
        if self.think and THINK_CLOSE in text:
            thinking, _, answer = text.partition(THINK_CLOSE)
            final = answer.strip() or None
        else:
            thinking = text
        start = thinking.find(THINK_OPEN) if self.think else -1
        body = thinking[start + len(THINK_OPEN):] if start >= 0 else thinking
        if not body.strip():
            if final is None:
                return Parsed(None)
            steps = (final,)  # an empty <think> block: the answer is the one step
            final = None
        else:
            steps = split_steps(body.strip() if self.think else body, self.split)
        traj = Trajectory(problem, steps, final, id)
        return Parsed(traj, _spans(text, [*traj.steps, *([final] if final is not None else [])]))

    def parse_query(self, query: str, prompt: str | None = None, id: str | None = None,
                    where: str = "query") -> Parsed:
        """A query (prompt + response) -> its trajectory; the problem comes from the prompt."""
        prompt, response = self.split_query(query, prompt, where)
        return self.parse(self.problem_of(prompt), response, id)


def message_text(message) -> str:
    """The text of one chat message: a string content, or the text parts of a multi-part content."""
    if isinstance(message, str):
        return message
    if not isinstance(message, Mapping):
        raise ValueError(f"a chat message must be a dict with 'role' and 'content'; got {type(message).__name__}")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    raise ValueError(f"a chat message's content must be a string or a list of parts; got {type(content).__name__}")


def completion_text(completion) -> str:
    """A TRL completion as text: a string, or (conversational) the assistant messages' contents, in order."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        return "".join(message_text(m) for m in completion
                       if not isinstance(m, Mapping) or m.get("role", "assistant") == "assistant")
    raise ValueError(f"a completion must be a string or a list of chat messages; got {type(completion).__name__}")


def _spans(text: str, segments: Sequence[str]) -> tuple[tuple[int, int], ...]:
    # Every segment is a substring of the text, in order (split pieces, or the stripped think block and answer).
    out, cursor = [], 0
    for seg in segments:
        start = text.find(seg, cursor)
        if start < 0:
            raise AssertionError(f"segment {seg[:40]!r} not found in its response")
        out.append((start, start + len(seg)))
        cursor = start + len(seg)
    return tuple(out)


def _where(row_id) -> str:
    return f" for id {row_id!r}" if row_id is not None else ""
