"""What every backend's scorer shares: input handling, batching by length, padding, and results.

Torch-free (numpy only), so the torch `Scorer` and the ONNX Runtime `OnnxScorer` subclass the same `ScorerBase`
and differ only in `_score_group`, which turns one padded batch into step and trajectory rewards.

Results never depend on batching: every sequence gets position ids from its own attention mask (so left and right
padding give the same hidden states) and step positions are shifted by its own padding offset.

Scoring is two stages, both public so that a caller with rows of its own (the CLI, a server) can report a bad row
before any work is spent on it: `prepare(row)` checks and encodes one trajectory and raises `ValueError` naming the
row and the field; `score_prepared(items)` batches and scores prepared trajectories. `score_batch` is the two in one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprm.config import ScorerConfig
from edgeprm.encoding import Encoded, Encoder
from edgeprm.families import Family
from edgeprm.results import ScoreResult
from edgeprm.stats import best_index
from edgeprm.trajectory import Trajectory, as_trajectory


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


@dataclass(frozen=True)
class Prepared:
    """One trajectory checked and encoded for a scorer (`ScorerBase.prepare`), ready for `score_prepared`."""

    trajectory: Trajectory
    encoded: Encoded

    @property
    def id(self) -> str | None:
        return self.trajectory.id

    @property
    def num_tokens(self) -> int:
        return len(self.encoded.ids)


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


def length_buckets(lengths: Sequence[int], token_budget: int, max_batch_size: int | None = None,
                   rng: random.Random | None = None) -> list[list[int]]:
    """Indices grouped by length so that batch size x longest <= token_budget (a longer one goes alone), at most
    `max_batch_size` per group. Without `rng`: shortest first, ties in input order. With `rng` (training): ties in
    random order and the groups shuffled."""
    if rng is None:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    else:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    out, cur = [], []
    for i in order:
        if cur and ((len(cur) + 1) * lengths[i] > token_budget
                    or (max_batch_size is not None and len(cur) >= max_batch_size)):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    if rng is not None:
        rng.shuffle(out)
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
    `edgeprm.load`.

    `config` is the `ScorerConfig` in effect, with what loading resolved filled in (family, aggregation,
    max_length). token_budget and padding_side may be changed on a live scorer; results do not depend on them.
    """

    def __init__(self, encoder: Encoder, config: ScorerConfig, model_dir: Path | None = None,
                 quantization: str | None = None, pad_id: int = 0):
        if config.aggregation is None or config.family is None:
            raise AssertionError("the backend resolves family and aggregation before building its scorer")
        self.encoder, self.config = encoder, config
        self.model_dir, self.quantization, self.pad_id = model_dir, quantization, pad_id

    # -- what the config says ------------------------------------------------------------------------------------
    @property
    def family(self) -> Family:
        return self.encoder.family

    @property
    def aggregation(self) -> str:
        return self.config.aggregation

    @property
    def alpha(self) -> float:
        return float(self.config.alpha)

    @property
    def truncate(self) -> bool:
        return self.config.truncate

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size

    @property
    def token_budget(self) -> int:
        return self.config.token_budget

    @token_budget.setter
    def token_budget(self, value: int) -> None:
        self.config = self.config.replace(token_budget=value)

    @property
    def padding_side(self) -> str:
        return self.config.padding_side

    @padding_side.setter
    def padding_side(self, value: str) -> None:
        self.config = self.config.replace(padding_side=value)

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    # -- input ---------------------------------------------------------------------------------------------------
    def trajectory(self, problem: str, steps, response: str | None = None, id: str | None = None) -> Trajectory:
        """`steps` as a list of strings, or a solution string split with the scorer's separator."""
        if isinstance(steps, str):
            return Trajectory.from_solution(problem, steps, self.encoder.split, response, id)
        return Trajectory(problem, tuple(steps), response, id)

    def prepare(self, item) -> Prepared:
        """Check and encode one Trajectory or row dict ({"problem", "steps"|"solution", "response"?, "id"?}).

        Raises ValueError naming the row (its id) and what is wrong with it; `edgeprm.encoding.TooLongError` (a
        ValueError) when it is over the length limit and truncation is off.
        """
        traj = as_trajectory(item, self.encoder.split)
        return Prepared(traj, self.encoder.encode(traj, self.truncate))

    # -- scoring -------------------------------------------------------------------------------------------------
    def score(self, problem: str, steps, response: str | None = None) -> ScoreResult:
        """Rewards of one trajectory: one step reward per step, the trajectory reward and the aggregated score."""
        return self.score_batch([self.trajectory(problem, steps, response)])[0]

    def score_batch(self, items: Iterable, progress: bool = False) -> list[ScoreResult]:
        """Score Trajectories or row dicts ({"problem", "steps"|"solution", "response"?, "id"?}), in input order."""
        return self.score_prepared([self.prepare(it) for it in items], progress)

    def best_of_n(self, problem: str, candidates: Sequence) -> tuple[int, list[ScoreResult]]:
        """Index of the candidate with the highest score (first on ties) and every candidate's result.

        Candidates are step lists, solution strings, or Trajectories of this problem."""
        if not candidates:
            raise ValueError("best_of_n needs at least one candidate; got 0")
        trajs = [c if isinstance(c, Trajectory) else self.trajectory(problem, c, id=str(i))
                 for i, c in enumerate(candidates)]
        results = self.score_batch(trajs)
        return best_index([r.score for r in results]), results

    # KV-cached scoring needs past keys and values, which an ONNX bundle's graph does not take or return: only the
    # torch backend has it (a real limit, said in edgeprm/export/README.md).
    def session(self, problem: str, steps=(), id: str | None = None):
        """A KV-cached step-by-step session (`edgeprm.backends.session`): the torch backend's."""
        raise self._no_kv_cache()

    def extend(self, sessions, texts):
        """One new step for each session in one batched forward: the torch backend's."""
        raise self._no_kv_cache()

    def _no_kv_cache(self) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} scores whole trajectories only: KV-cached sessions need "
                                   "the torch backend (edgeprm.load(model, backend='torch'))")

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by length so that batch_size x longest <= token_budget (a longer one goes alone)."""
        return length_buckets(lengths, self.token_budget, self.max_batch_size)

    def score_prepared(self, items: Sequence[Prepared], progress: bool = False) -> list[ScoreResult]:
        """Score prepared trajectories (`prepare`), batched by length; results in input order."""
        results: list[ScoreResult | None] = [None] * len(items)
        jobs = ((g, lambda g=g: self._score_group([items[i].encoded for i in g]))
                for g in self.batches([it.num_tokens for it in items]))
        self._fill(results, items, jobs, len(items), "scoring", progress)
        return results

    @staticmethod
    def _fill(results: list, items: Sequence[Prepared], jobs, total: int, desc: str, progress: bool) -> None:
        """Run `jobs` ((indices, thunk -> their `group_results` dicts) pairs) into `results`, with a progress bar."""
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="traj", desc=desc)
        for idx, work in jobs:
            for i, r in zip(idx, work()):
                results[i] = ScoreResult(**{**r, "id": items[i].id})
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()

    def pad(self, group: Sequence[Encoded]) -> PaddedBatch:
        return pad_batch(group, self.pad_id, self.padding_side)

    def _score_group(self, group: Sequence[Encoded]) -> list[dict]:
        """One batch -> a `group_results` dict per trajectory, in group order."""
        raise NotImplementedError
