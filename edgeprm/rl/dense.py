"""Dense token-level rewards in the *policy's* token space: each step's reward on the last token of that step.

PPO-style trainers (verl's token-level reward tensors, OpenRLHF's per-token rewards) want a reward per response
token; a PRM gives one per step, computed on its own tokenizer. `token_rewards` maps them across: the steps are
found in the response text (`QueryTemplate`), each step's last character is located in the policy's tokens, and the
step's reward is put on the token that holds that character; every other token gets 0. How the character is located:
- from the response text: the policy tokenizer's offset mapping (a fast tokenizer), never a guess from lengths;
- from `response_ids` (the tokens the policy actually generated, which need not be how the tokenizer would encode the
  text): decoding prefixes of the ids, the first prefix whose text covers the step's end.
The array has the response's token count (float32), one row of verl's `token_level_rewards`. The final response
after `</think>` (`think=True`) is one more segment, with the trajectory reward on its last token. Two steps ending in
the same policy token (a token spanning a step boundary) add up there, so the array's sum is the sum of the rewards.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from edgeprm.rl.template import Parsed, QueryTemplate


def _ends_from_offsets(policy_tokenizer, response: str, ends: Sequence[int]) -> tuple[int, list[int]]:
    try:
        enc = policy_tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise ValueError("the policy tokenizer gives no offset mapping (a slow tokenizer): pass response_ids, the "
                         "tokens the policy generated, or load the fast tokenizer") from None
    starts = [s for s, _ in enc["offset_mapping"]]
    # the token holding character e-1 is the last one that starts before e (offsets are non-decreasing)
    return len(starts), [bisect.bisect_left(starts, e) - 1 for e in ends]


def _ends_from_ids(policy_tokenizer, response: str, ids: Sequence[int], ends: Sequence[int],
                   skip_special_tokens: bool) -> tuple[int, list[int]]:
    ids = [int(i) for i in ids]

    def text(k: int) -> str:
        return policy_tokenizer.decode(ids[:k], skip_special_tokens=skip_special_tokens)

    if text(len(ids)) != response:
        raise ValueError("the response is not the decoding of response_ids: pass the text the policy's tokenizer "
                         "decodes them to (verl: tokenizer.decode(valid_response_ids, skip_special_tokens=True))")
    out = []
    for e in ends:  # the shortest prefix whose text starts with the response up to the step's end
        want, lo, hi = response[:e], 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if text(mid).startswith(want):
                hi = mid
            else:
                lo = mid + 1
        out.append(lo - 1)
    return len(ids), out


def _place(n: int, tokens: Sequence[int], values: Sequence[float | None]) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    for t, v in zip(tokens, values):
        if v is not None:
            out[t] += np.float32(v)
    return out


def token_rewards_batch(policy_tokenizer, prompts: Sequence, responses: Sequence[str], scorer, *,
                        response_ids: Sequence[Sequence[int]] | None = None, template: QueryTemplate | None = None,
                        problems: Sequence[str] | None = None, skip_special_tokens: bool = True) -> list[np.ndarray]:
    """`token_rewards` for many responses, scored in one `score_batch` call; one float32 array per response."""
    n = len(responses)
    if len(prompts) != n or (response_ids is not None and len(response_ids) != n) or (
            problems is not None and len(problems) != n):
        raise ValueError(f"one prompt (and response_ids / problem, when given) per response; got {len(prompts)} "
                         f"prompts for {n} responses")
    template = template or QueryTemplate(**({"split": scorer.config.split} if hasattr(scorer, "config") else {}))
    parsed: list[Parsed] = []
    for i in range(n):
        problem = problems[i] if problems is not None else template.problem_of(prompts[i])
        parsed.append(template.parse(problem, responses[i], id=str(i)))
    scored = [i for i, p in enumerate(parsed) if p.trajectory is not None]
    results = dict(zip(scored, scorer.score_batch([parsed[i].trajectory for i in scored]) if scored else []))
    out = []
    for i in range(n):
        ends = [e for _, e in parsed[i].spans]
        if response_ids is not None:
            length, tokens = _ends_from_ids(policy_tokenizer, responses[i], response_ids[i], ends, skip_special_tokens)
        else:
            length, tokens = _ends_from_offsets(policy_tokenizer, responses[i], ends)
        if i not in results:
            out.append(np.zeros(length, dtype=np.float32))
            continue
        r = results[i]
        values = list(r.step_rewards)
        if parsed[i].trajectory.response is not None:
            values.append(r.trajectory_reward)
        out.append(_place(length, tokens, values))
    return out


def token_rewards(policy_tokenizer, prompt, response: str, scorer, *, response_ids: Sequence[int] | None = None,
                  template: QueryTemplate | None = None, problem: str | None = None,
                  skip_special_tokens: bool = True) -> np.ndarray:
    """Per-token rewards of one response, float32 [number of response tokens] (see the module docstring).

    policy_tokenizer: the policy's transformers tokenizer. prompt: the prompt string or chat messages (the problem
    is read from it with `template`, or given as `problem`). response: the response text. scorer: an `edgeprm.load`
    scorer or an `edgeprm.client.Client`. response_ids: the policy's response tokens; `response` must be their
    decoding (with `skip_special_tokens`). Without them, the response is tokenized with offsets.
    """
    return token_rewards_batch(policy_tokenizer, [prompt], [response], scorer,
                               response_ids=None if response_ids is None else [response_ids], template=template,
                               problems=None if problem is None else [problem],
                               skip_special_tokens=skip_special_tokens)[0]
