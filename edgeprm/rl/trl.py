"""A process reward for TRL: `GRPOTrainer(reward_funcs=PRMReward(scorer))` (and any trainer with TRL's convention).

TRL calls each reward function as `f(prompts=..., completions=..., completion_ids=..., **dataset_columns)` and wants
one float per completion (None = not applicable, which it turns into NaN). Both of its formats are handled:
- standard: prompts and completions are strings (a prompt is the problem, or a chat-templated prompt whose user
  turn `QueryTemplate.problem_pattern` finds);
- conversational: a prompt is a list of chat messages (the problem is the last user message) and a completion is a
  list holding the assistant message.
The completion is split into steps by the template (`split`, or the R1 `<think>` format with `think=True`), scored
with the scorer's `score_batch` in one call per training batch, and reduced to one number by `aggregation` (default:
the scorer's own). `scorer` is an `edgeprm.load` result or an `edgeprm.client.Client` (`remote_reward`), so
the reward can run in the trainer's process or on an `edgeprm serve` machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgeprm.aggregation import aggregate, check_aggregation
from edgeprm.results import ScoreResult
from edgeprm.rl.template import QueryTemplate, completion_text


def result_reward(result: ScoreResult, aggregation: str | None = None, alpha: float = 1.0) -> float:
    """One reward from a ScoreResult: its `score`, or the steps re-aggregated with `aggregation` (cut steps left
    out; a truncated trajectory's last kept step stands in for its trajectory reward, as in the scorer)."""
    if aggregation is None:
        return result.score
    kept = [x for x in result.step_rewards if x is not None]
    final = result.trajectory_reward if result.trajectory_reward is not None else (kept[-1] if kept else math.nan)
    return aggregate([kept], [final], aggregation, alpha)[0]


class PRMReward:
    """`(prompts, completions, **kwargs) -> list[float]`: a PRM's reward for each completion, TRL's calling convention.

    scorer: an `edgeprm.load` scorer or an `edgeprm.client.Client`. template: how problems and steps are read from
    the text (default: `QueryTemplate` with the scorer's split). aggregation / alpha: how the step rewards become one
    reward (None: the scorer's `score`). empty_reward: the reward of a completion with no text (or no step left after
    truncation). problem_column: a dataset column holding the problem text (TRL passes every column), used instead
    of reading it from the prompt. name: what TRL logs the reward as (`rewards/<name>/mean`).
    """

    def __init__(self, scorer, *, template: QueryTemplate | None = None, aggregation: str | None = None,
                 alpha: float | None = None, empty_reward: float | None = 0.0, problem_column: str | None = None,
                 name: str = "prm"):
        self.scorer = scorer
        config = getattr(scorer, "config", None)
        self.template = template or QueryTemplate(**({"split": config.split} if config is not None else {}))
        self.aggregation = None if aggregation is None else check_aggregation(aggregation)
        self.alpha = float(alpha if alpha is not None else getattr(config, "alpha", 1.0))
        self.empty_reward = empty_reward
        self.problem_column = problem_column
        self.__name__ = name

    def problems(self, prompts: Sequence, kwargs: dict) -> list[str]:
        if self.problem_column is None:
            return [self.template.problem_of(p) for p in prompts]
        column = kwargs.get(self.problem_column)
        if column is None or len(column) != len(prompts):
            raise ValueError(f"problem_column={self.problem_column!r}: the trainer passed no such column (one value "
                             f"per completion); the dataset's columns here are {sorted(kwargs)}")
        return [str(p) for p in column]

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions; TRL passes one prompt "
                             "per completion")
        problems = self.problems(prompts, kwargs)
        parsed = [self.template.parse(problem, completion_text(c), id=str(i))
                  for i, (problem, c) in enumerate(zip(problems, completions))]
        scored = [i for i, p in enumerate(parsed) if p.trajectory is not None]
        results = self.scorer.score_batch([parsed[i].trajectory for i in scored]) if scored else []
        rewards: list[float | None] = [self.empty_reward] * len(completions)
        for i, r in zip(scored, results):
            value = result_reward(r, self.aggregation, self.alpha)
            rewards[i] = self.empty_reward if math.isnan(value) else value
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and completions:  # TRL >= 1.x: scalars logged beside the reward
            log_metric(f"{self.__name__}/steps", sum(len(parsed[i].trajectory.steps) for i in scored)
                       / max(len(scored), 1))
            log_metric(f"{self.__name__}/empty_frac", 1.0 - len(scored) / len(completions))
        return rewards


def remote_reward(url: str, api_key: str | None = None, **options) -> PRMReward:
    """A `PRMReward` that scores on an `edgeprm serve` server (options as for `PRMReward`)."""
    from edgeprm.client import Client

    return PRMReward(Client(url, api_key), **options)
