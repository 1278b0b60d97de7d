"""What every backend's scorer shares: input handling, batching by length, padding, aggregation and results.

Torch-free (numpy only), so the torch `Scorer` and the ONNX Runtime `OnnxScorer` subclass the same `ScorerBase`
and differ only in `_score_group`, which turns one padded batch into step and trajectory rewards.

Results never depend on batching: every sequence gets position ids from its own attention mask (so left and right
padding give the same hidden states) and step positions are shifted by its own padding offset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprm.encoding import Encoded, Encoder
from edgeprm.families import Aggregation, Family, check_aggregation
from edgeprm.results import ScoreResult
from edgeprm.trajectory import Trajectory, as_trajectory

PADDING_SIDES = ("left", "right")


@dataclass(frozen=True)
class PaddedBatch:
    """One forward batch: padded ids and mask [B, T] int64, and per row the (shifted) positions to read.

    step_positions[b] holds the kept steps of row b (truncation drops the others); final_positions[b] is where the
    trajectory reward is read: the final position, or for a truncated trajectory the last kept step (the value
    after it stands in for the trajectory reward in the score).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    step_positions: list[list[int]]
    final_positions: list[int]


def pad_batch(group: Sequence[Encoded], pad_id: int, padding_side: str) -> PaddedBatch:
    t = max(len(e.ids) for e in group)
    input_ids = np.full((len(group), t), pad_id, dtype=np.int64)
    mask = np.zeros((len(group), t), dtype=np.int64)
    steps, finals = [], []
    for row, e in enumerate(group):
        n = len(e.ids)
        shift = t - n if padding_side == "left" else 0
        input_ids[row, shift : shift + n] = e.ids
        mask[row, shift : shift + n] = 1
        scored = e.scored_positions
        steps.append([p + shift for p in scored])
        last = e.final_position if e.final_position is not None else (scored[-1] if scored else n - 1)
        finals.append(last + shift)
    return PaddedBatch(input_ids, mask, steps, finals)


def aggregate(step_rewards: Sequence[Sequence[float]], final_rewards: Sequence[float], aggregation: str,
              alpha: float) -> list[float]:
    """Per-trajectory scores from each trajectory's step rewards and its final reward, in fp32.

    The numpy twin of `edgeprm.kernels.step_head.aggregate_ref` (the tests hold them equal): mean, min, last,
    prod, or reasonflux = mean + alpha * final. A trajectory with no (kept) steps scores NaN.
    """
    agg = Aggregation(aggregation)
    out = []
    for r, final in zip(step_rewards, final_rewards):
        r = np.asarray(r, dtype=np.float32)
        if r.size == 0:
            out.append(math.nan)
        elif agg is Aggregation.MEAN:
            out.append(float(r.mean(dtype=np.float32)))
        elif agg is Aggregation.MIN:
            out.append(float(r.min()))
        elif agg is Aggregation.LAST:
            out.append(float(r[-1]))
        elif agg is Aggregation.PROD:
            out.append(float(r.prod(dtype=np.float32)))
        else:
            out.append(float(r.mean(dtype=np.float32) + np.float32(alpha) * np.float32(final)))
    return out


def group_results(group: Sequence[Encoded], step_rewards: Sequence[Sequence[float]],
                  trajectory_rewards: Sequence[float], scores: Sequence[float]) -> list[dict]:
    """ScoreResult fields per trajectory: cut steps get None, a truncated trajectory has no trajectory reward."""
    out = []
    for e, steps, traj, score in zip(group, step_rewards, trajectory_rewards, scores):
        it = iter(steps)
        out.append({
            "step_rewards": [None if p is None else float(next(it)) for p in e.step_positions],
            "trajectory_reward": float(traj) if e.final_position is not None else None,
            "score": float(score),
            "truncated": e.truncated,
            "num_tokens": e.full_length,
        })
    return out


class ScorerBase:
    """Scores trajectories with one loaded PRM; a backend implements `_score_group`. Build one with
    `edgeprm.load`."""

    def __init__(self, encoder: Encoder, family: Family, aggregation: str, alpha: float = 1.0,
                 token_budget: int = 8192, max_batch_size: int = 32, padding_side: str = "right",
                 truncate: bool = False, pad_id: int = 0, model_dir: Path | None = None,
                 quantization: str | None = None):
        check_aggregation(aggregation)
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}; got {padding_side!r}")
        if token_budget < 1 or max_batch_size < 1:
            raise ValueError(f"token_budget and max_batch_size must be positive; got {token_budget}, "
                             f"{max_batch_size}")
        self.encoder, self.family = encoder, family
        self.aggregation, self.alpha = aggregation, float(alpha)
        self.token_budget, self.max_batch_size = token_budget, max_batch_size
        self.padding_side, self.truncate, self.pad_id = padding_side, truncate, pad_id
        self.model_dir, self.quantization = model_dir, quantization

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def trajectory(self, problem: str, steps, response: str | None = None, id: str | None = None) -> Trajectory:
        """`steps` as a list of strings, or a solution string split with the scorer's separator."""
        if isinstance(steps, str):
            return Trajectory.from_solution(problem, steps, self.encoder.split, response, id)
        return Trajectory(problem, tuple(steps), response, id)

    def score(self, problem: str, steps, response: str | None = None) -> ScoreResult:
        """Rewards of one trajectory: one step reward per step, the trajectory reward and the aggregated score."""
        return self.score_batch([self.trajectory(problem, steps, response)])[0]

    def score_batch(self, items: Iterable, progress: bool = False) -> list[ScoreResult]:
        """Score Trajectories or row dicts ({"problem", "steps"|"solution", "response"?, "id"?}), in input order."""
        trajs = [as_trajectory(it, self.encoder.split) for it in items]
        encoded = [self.encoder.encode(t, self.truncate) for t in trajs]
        return self.score_encoded(encoded, [t.id for t in trajs], progress)

    def best_of_n(self, problem: str, candidates: Sequence) -> tuple[int, list[ScoreResult]]:
        """Index of the candidate with the highest score (first on ties) and every candidate's result.

        Candidates are step lists, solution strings, or Trajectories of this problem."""
        if not candidates:
            raise ValueError("best_of_n needs at least one candidate; got 0")
        trajs = [c if isinstance(c, Trajectory) else self.trajectory(problem, c, id=str(i))
                 for i, c in enumerate(candidates)]
        results = self.score_batch(trajs)
        keys = [-math.inf if math.isnan(r.score) else r.score for r in results]
        return max(range(len(keys)), key=lambda i: (keys[i], -i)), results

    # -- batching ---------------------------------------------------------------------------------------------
    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by length so that batch_size x longest <= token_budget (a longer one goes alone)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out, cur = [], []
        for i in order:
            if cur and ((len(cur) + 1) * lengths[i] > self.token_budget or len(cur) >= self.max_batch_size):
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        return out

    def score_encoded(self, encoded: Sequence[Encoded], ids: Sequence[str | None] | None = None,
                      progress: bool = False) -> list[ScoreResult]:
        ids = ids if ids is not None else [None] * len(encoded)
        results: list[ScoreResult | None] = [None] * len(encoded)
        groups = self.batches([len(e.ids) for e in encoded])
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(encoded), unit="traj", desc="scoring")
        for group in groups:
            for i, r in zip(group, self._score_group([encoded[i] for i in group])):
                results[i] = ScoreResult(**{**r, "id": ids[i]})
            if bar is not None:
                bar.update(len(group))
        if bar is not None:
            bar.close()
        return results

    def pad(self, group: Sequence[Encoded]) -> PaddedBatch:
        return pad_batch(group, self.pad_id, self.padding_side)

    def _score_group(self, group: Sequence[Encoded]) -> list[dict]:
        """One batch -> a `group_results` dict per trajectory, in group order."""
        raise NotImplementedError
