"""A custom reward function for verl: `compute_score(data_source, solution_str, ground_truth, extra_info=None)`.

verl's config names a file and a function (`custom_reward_function.path` = this file, `.name` = `compute_score`, or
`compute_score_batch` for its batch reward manager) and passes `custom_reward_function.reward_kwargs` as keyword
arguments on every call: `model` / `url` (+ `api_key`) choose the PRM (default: the bundled demo PRM, loaded once per
worker process and kept), `beta`, `rule`, `aggregation`, `split`, `think`, `empty_reward`, `problem_keys`.

verl hands the reward function the decoded response and the dataset row's `extra_info`, not the prompt, so the
problem is read from `extra_info` (the first of `problem_keys` present: "question" as verl's own GSM8K and MATH
preprocessing writes it, then "problem", "prompt"). With a rule score, the reward is ReasonFlux's mix
`(1 - beta) * rule + beta * prm` (beta = 0.75); the rule score is `extra_info["rule_score"]` when the row carries
one, or `rule(solution_str, ground_truth)` when `rule` is given (`"final-answer"`: `final_answer_rule`, or any
callable). The result is a dict, which verl logs key by key: `score` (the reward), `prm`, and `rule` (NaN when no
rule score was given).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence

from edgeprm.rl.template import QueryTemplate
from edgeprm.rl.trl import result_reward
from edgeprm.trajectory import DEFAULT_SPLIT

BETA = 0.75  # ReasonFlux's RL mix: 0.25 * rule + 0.75 * PRM
PROBLEM_KEYS = ("question", "problem", "prompt")
_SCORERS: dict = {}
_LOCK = threading.Lock()


def scorer_for(model=None, url: str | None = None, api_key: str | None = None, **options):
    """The process's scorer for these arguments, loaded on first use: `edgeprm.load(model, **options)`, or a Client
    of the server at `url`."""
    key = (model, url, api_key, tuple(sorted(options.items())))
    with _LOCK:
        if key not in _SCORERS:
            if url is not None:
                from edgeprm.client import Client

                _SCORERS[key] = Client(url, api_key)
            else:
                import edgeprm

                _SCORERS[key] = edgeprm.load(model, **options)
        return _SCORERS[key]


_BOXED = re.compile(r"\\boxed\s*\{")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (braces balanced)."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def final_answer(text: str) -> str | None:
    """A solution's final answer: the last \\boxed{...}, else what follows the last '####', else the last number."""
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        return text.rsplit("####", 1)[1].strip() or None
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _normal(answer: str) -> str:
    text = answer.strip().strip("$").strip().rstrip(".").replace(",", "").replace(" ", "")
    try:
        value = float(text)
    except ValueError:
        return text
    return repr(int(value)) if value.is_integer() else repr(value)


def final_answer_rule(solution_str: str, ground_truth) -> float:
    """1.0 when the solution's final answer equals the ground truth (numbers compared as numbers), else 0.0."""
    got = final_answer(solution_str)
    return float(got is not None and _normal(got) == _normal(str(ground_truth)))


RULES: dict[str, Callable[[str, object], float]] = {"final-answer": final_answer_rule}


def _problem(extra_info, keys: Sequence[str], i: int) -> str:
    info = extra_info or {}
    for k in keys:
        value = info.get(k) if hasattr(info, "get") else None
        if isinstance(value, str) and value.strip():
            return QueryTemplate().problem_of(value) if k == "prompt" else value
    raise ValueError(f"sample {i}: extra_info has none of {tuple(keys)} to read the problem from (a PRM scores a "
                     f"solution to a problem); got keys {sorted(info) if hasattr(info, 'keys') else info!r}. Put the "
                     "question in extra_info['question'] when preprocessing, or pass problem_keys=[...]")


def compute_score_batch(data_sources: Sequence, solution_strs: Sequence[str], ground_truths: Sequence,
                        extra_infos: Sequence | None = None, *, model=None, url: str | None = None,
                        api_key: str | None = None, beta: float = BETA, rule=None, aggregation: str | None = None,
                        split: str = DEFAULT_SPLIT, think: bool = False, empty_reward: float = 0.0,
                        problem_keys: Sequence[str] = PROBLEM_KEYS, **options) -> list[dict]:
    """verl's batch reward manager convention: one dict {"score", "prm", "rule"} per sample, scored in one call.

    `options` go to `edgeprm.load` (e.g. quantization, device, truncate, max_length).
    """
    n = len(solution_strs)
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * n
    if not (len(data_sources) == len(ground_truths) == len(extra_infos) == n):
        raise ValueError(f"one data_source, ground_truth and extra_info per solution: got {len(data_sources)}, "
                         f"{len(ground_truths)}, {len(extra_infos)} for {n} solutions")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be between 0 and 1 (the PRM's weight in the mix); got {beta}")
    rule_fn = RULES.get(rule, rule) if isinstance(rule, str) else rule
    if rule_fn is not None and not callable(rule_fn):
        raise ValueError(f"rule must be one of {tuple(RULES)} or a callable (solution_str, ground_truth) -> float; "
                         f"got {rule!r}")
    scorer = scorer_for(model, url, api_key, **options)
    template = QueryTemplate(split=split, think=think)
    parsed = [template.parse(_problem(info, problem_keys, i), s, id=str(i))
              for i, (s, info) in enumerate(zip(solution_strs, extra_infos))]
    scored = [i for i, p in enumerate(parsed) if p.trajectory is not None]
    results = scorer.score_batch([parsed[i].trajectory for i in scored]) if scored else []
    prm = [empty_reward] * n
    for i, r in zip(scored, results):
        value = result_reward(r, aggregation, getattr(getattr(scorer, "config", None), "alpha", 1.0))
        prm[i] = empty_reward if math.isnan(value) else value
    out = []
    for i in range(n):
        info = extra_infos[i] or {}
        given = info.get("rule_score") if hasattr(info, "get") else None
        rule_score = (float(given) if given is not None
                      else float(rule_fn(solution_strs[i], ground_truths[i])) if rule_fn is not None else math.nan)
        score = prm[i] if math.isnan(rule_score) else (1.0 - beta) * rule_score + beta * prm[i]
        out.append({"score": float(score), "prm": float(prm[i]), "rule": rule_score})
    return out


def compute_score(data_source, solution_str: str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl's custom reward function convention, one sample: {"score", "prm", "rule"} (see the module docstring)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]
