"""Reward-function shapes the RL frameworks call, on top of any scorer (`edgeprm.load`) or an
`edgeprm.client.Client` (torch-free; the frameworks themselves are never imported here).

- `edgeprm.rl.trl.PRMReward`: TRL's `(prompts, completions, **kwargs) -> list[float]` for `GRPOTrainer(reward_funcs=)`,
  plain and conversational formats; `remote_reward(url)` scores on an `edgeprm serve` server.
- `edgeprm.rl.verl.compute_score`: verl's custom reward function `(data_source, solution_str, ground_truth,
  extra_info=None)`, with ReasonFlux's `(1 - beta) * rule + beta * prm` mix when a rule score is given;
  `compute_score_batch` for verl's batch reward manager.
- `edgeprm.rl.dense.token_rewards`: each step's reward on the last token of that step in the policy's own tokens.
- `edgeprm.rl.template.QueryTemplate`: how the problem and the steps are read from prompt and response text (also
  what `edgeprm serve`'s OpenRLHF endpoint uses).
"""

from edgeprm.rl.dense import token_rewards, token_rewards_batch
from edgeprm.rl.template import QueryTemplate
from edgeprm.rl.trl import PRMReward, remote_reward
from edgeprm.rl.verl import compute_score, compute_score_batch

__all__ = ["PRMReward", "QueryTemplate", "compute_score", "compute_score_batch", "remote_reward", "token_rewards",
           "token_rewards_batch"]
