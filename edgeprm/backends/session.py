"""KV-cached scoring on the torch backend: step-by-step sessions, shared prompts and chunked prefill.

A step-level search asks the PRM for the reward of every partial solution after every new step. Re-scoring each
prefix from scratch costs the search quadratic backbone work; a causal PRM's reward at a step depends only on the
tokens before it, so a session keeps the keys and values of what it has scored and runs the backbone on new tokens
only.

    session = scorer.session(problem)
    r1 = session.add_step("5 * 12 = 60")          # that step's reward
    beam = session.fork()                         # shares the cached prefix (no copy)
    scorer.extend([session, beam], [a, b])        # one batched forward for many sessions
    session.rollback(1)
    session.finish(response=None)                 # == scorer.score(problem, session.steps, response)

Exactness at the seams: after every change a session re-encodes its whole text exactly as `score` would, crops its
cache to the longest common prefix with the cached token ids and recomputes from there. Where BPE merges across a
step boundary (a value-head step whose last token merges with the next separator, a step that begins with a digit
or a combining character), the merged tokens are recomputed; no reward is ever read off a different tokenization.
A step's reward from `add_step` is its reward in `score(problem, steps so far)`; `finish` returns every reward as
`score` gives it for the whole trajectory.

Per family, what the cache holds: a step-classifier's stops after the last `<extra_0>` (the chat template's tail
is read by no reward, so it is never computed); a value-head's after the token that holds the step's last
character; a token-prob's after the last step tag.

The same machinery scores whole trajectories: candidates of one problem share their encoded prompt, computed once
(`share_prefix`), and sequences longer than `chunk_tokens` are prefilled in chunks (bounded activation memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edgeprm.backends.base import group_results, length_buckets
from edgeprm.backends.prefix import Cached, common_prefix, forward_cached
from edgeprm.encoding import Encoded
from edgeprm.kernels.step_head import step_head
from edgeprm.results import ScoreResult
from edgeprm.trajectory import Trajectory, check_problem

# Candidates of one problem share their prompt's computation when it is at least this many tokens long (shorter
# prompts cost less than the extra batching).
MIN_SHARED_TOKENS = 16


@dataclass
class _Plan:
    """One sequence's next forward: its cache cropped to what still holds, the tokens to run, the rows to keep."""

    view: Cached
    rows: dict[int, torch.Tensor]
    new: tuple[int, ...]
    want: set[int]


def needed_positions(encoded: Encoded, final: bool) -> list[int]:
    """Positions whose hidden rows a reward reads: the kept steps' and, with `final`, the trajectory reward's."""
    out = list(encoded.scored_positions)
    if final and encoded.final_position is not None:
        out.append(encoded.final_position)
    return out


def plan(view: Cached, rows: dict[int, torch.Tensor], encoded: Encoded, final: bool) -> _Plan:
    """What to compute so that every needed row of `encoded` exists, reusing the cache where the ids agree."""
    needed = needed_positions(encoded, final)
    target = max(needed) + 1 if needed else 0
    common = common_prefix(view.ids, encoded.ids[:target])
    missing = [p for p in needed if p < common and p not in rows]
    if missing:  # a position that became a step position without its row: recompute from there
        common = min(missing)
    view = view.crop(common)
    rows = {p: r for p, r in rows.items() if p < common}
    return _Plan(view, rows, tuple(encoded.ids[common:target]), {p for p in needed if p >= common})


def run(scorer, plans: Sequence[_Plan], keep_views: bool = True) -> list[tuple[Cached, dict[int, torch.Tensor]]]:
    """Execute plans in batches under the scorer's token budget; each plan's extended view and its rows
    (without `keep_views` the views returned are the plans' own: nothing of the new tokens' cache is kept)."""
    out: list[tuple[Cached, dict] | None] = [None] * len(plans)
    todo = [i for i, p in enumerate(plans) if p.new]
    for i, p in enumerate(plans):
        if not p.new:
            out[i] = (p.view, p.rows)
    lengths = [plans[i].view.length + len(plans[i].new) for i in todo]
    for bucket in length_buckets(lengths, scorer.token_budget, scorer.max_batch_size):
        idx = [todo[j] for j in bucket]
        views, rows = forward_cached(scorer.backbone, [plans[i].view for i in idx], [plans[i].new for i in idx],
                                     [plans[i].want for i in idx], scorer.chunk_tokens, scorer.device,
                                     keep_views=keep_views)
        scorer.backbone_tokens += sum(len(plans[i].new) for i in idx)
        for i, view, new_rows in zip(idx, views, rows):
            out[i] = (view, {**plans[i].rows, **new_rows})
    return out


def read(scorer, encoded: Encoded, rows: dict[int, torch.Tensor], final: bool) -> dict:
    """`group_results` fields of one encoded trajectory from its hidden rows (the fused step head, packed)."""
    return read_many(scorer, [encoded], [rows], final)[0]


def read_many(scorer, encoded: Sequence[Encoded], rows: Sequence[dict[int, torch.Tensor]], final: bool) -> list[dict]:
    """`read` for many trajectories in one launch of the fused step head: their rows packed one after another.

    Without `final` no trajectory reward is read (partial solutions: only the step rewards are used)."""
    out: list[dict | None] = [None] * len(encoded)
    xs, positions, offsets, finals, seqs, kept = [], [], [0], [], [0], []
    for i, (e, r) in enumerate(zip(encoded, rows)):
        scored = e.scored_positions
        if not scored:
            out[i] = group_results([e], [[]], [math.nan], [math.nan])[0] | {"trajectory_reward": None}
            continue
        fpos = (e.final_position if e.final_position is not None else scored[-1]) if final else None
        xs += [r[p] for p in scored] + ([r[fpos]] if fpos is not None else [])
        positions += range(len(scored))
        offsets.append(offsets[-1] + len(scored))
        if fpos is not None:
            finals.append(len(scored))
        seqs.append(len(xs))
        kept.append(i)
    if not kept:
        return out
    x = torch.stack(xs)

    def ints(values):
        return torch.tensor(values, dtype=torch.int32, device=x.device)

    steps, traj, scores = step_head(x, ints(positions), ints(offsets), scorer.head, scorer.aggregation,
                                    scorer.alpha, final_positions=ints(finals) if final else None,
                                    seq_offsets=ints(seqs))
    steps, traj, scores = steps.cpu().tolist(), traj.cpu().tolist(), scores.cpu().tolist()
    group = [encoded[i] for i in kept]
    per = [steps[a:b] for a, b in zip(offsets, offsets[1:])]
    for i, r in zip(kept, group_results(group, per, traj, scores)):
        out[i] = r
    return out


def score_encoded(scorer, group: Sequence[Encoded], prefix: int = 0) -> list[dict]:
    """Whole trajectories through the cache: the first `prefix` tokens (shared by all of `group`) computed once,
    then every continuation batched against them, each prefilled in chunks. `group_results` dicts, in order."""
    return score_groups(scorer, [(group, prefix)])[0]


def score_groups(scorer, groups: Sequence[tuple[Sequence[Encoded], int]]) -> list[list[dict]]:
    """`score_encoded` for many groups at once: every group's shared prefix in one batched run, then every
    continuation in another, so small groups still fill the token budget."""
    prefixes = [_Plan(Cached(), {}, tuple(g[0].ids[:n]) if n else (),
                      {p for e in g for p in needed_positions(e, True) if p < n}) for g, n in groups]
    roots = run(scorer, prefixes)
    plans = [plan(view, rows, e, final=True) for (g, _), (view, rows) in zip(groups, roots) for e in g]
    rows = [r for _, r in run(scorer, plans, keep_views=False)]  # whole trajectories: their caches are not kept
    results = iter(read_many(scorer, [e for g, _ in groups for e in g], rows, True))
    return [[next(results) for _ in g] for g, _ in groups]


def waves(groups: Sequence[tuple[list[int], int]], lengths: Sequence[int], tokens: int) -> list[list]:
    """Consecutive groups whose trajectories hold at most `tokens` tokens together (a group alone may hold more),
    so that the cached prefixes of one wave bound the memory of shared-prompt scoring."""
    out, cur, n = [], [], 0
    for g in groups:
        size = sum(lengths[i] for i in g[0])
        if cur and n + size > tokens:
            out.append(cur)
            cur, n = [], 0
        cur.append(g)
        n += size
    if cur:
        out.append(cur)
    return out


def shared_prompts(items: Sequence, min_tokens: int = MIN_SHARED_TOKENS) -> list[tuple[list[int], int]]:
    """Groups of prepared items of the same problem (two or more) with the length of their common token prefix,
    where that prefix is at least `min_tokens` long."""
    by_problem: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_problem.setdefault(it.trajectory.problem, []).append(i)
    out = []
    for idx in by_problem.values():
        if len(idx) < 2:
            continue
        first = items[idx[0]].encoded.ids
        n = min(common_prefix(first, items[i].encoded.ids) for i in idx[1:])
        if n >= min_tokens:
            out.append((idx, n))
    return out


class Session:
    """A problem and the steps scored so far, with the backbone's cache for them. Build one with
    `scorer.session(problem)`; see the module docstring."""

    def __init__(self, scorer, problem: str, id: str | None = None):
        check_problem(problem, id)
        self.scorer, self.problem, self.id = scorer, problem, id
        self._steps: tuple[str, ...] = ()
        self._view = Cached()
        self._rows: dict[int, torch.Tensor] = {}
        self._encoded: Encoded | None = None

    @property
    def steps(self) -> tuple[str, ...]:
        return self._steps

    @property
    def cached_tokens(self) -> int:
        """Tokens whose keys and values this session holds (shared with its forks)."""
        return self._view.length

    @property
    def step_rewards(self) -> list[float | None]:
        """Rewards of the steps so far, as `score(problem, steps)` gives them (None for a step cut by truncation)."""
        if not self._steps:
            return []
        return read(self.scorer, self._encoded, self._rows, final=False)["step_rewards"]

    def add_step(self, text: str) -> float | None:
        """Append one step; its reward (None when truncation cut it)."""
        return self.scorer.extend([self], [text])[0]

    def add_steps(self, texts: Sequence[str]) -> list[float | None]:
        """Append several steps in one forward; their rewards, as `score(problem, steps + texts)` gives them."""
        if isinstance(texts, str):
            raise ValueError("add_steps takes a list of step strings; use add_step for one step")
        return _extend(self.scorer, [self], [list(texts)])[0]

    def fork(self) -> Session:
        """A branch with the same steps that shares this session's cached prefix (nothing is copied)."""
        other = Session.__new__(Session)
        other.__dict__.update(self.__dict__)
        other._rows = dict(self._rows)
        return other

    def rollback(self, n_steps: int = 1) -> None:
        """Drop the last `n_steps` steps and the cache after what the remaining steps need."""
        if not isinstance(n_steps, int) or not 0 <= n_steps <= len(self._steps):
            raise ValueError(f"rollback takes 0..{len(self._steps)} steps for this session; got {n_steps!r}")
        if n_steps == 0:
            return
        self._steps = self._steps[: len(self._steps) - n_steps]
        if not self._steps:
            self._view, self._rows, self._encoded = Cached(), {}, None
            return
        self._encoded = self.scorer.encoder.encode(self._trajectory(self._steps), self.scorer.truncate)
        # Usually this only drops tokens; where the last kept step's final token had merged with what followed
        # (a value-head seam), that token is recomputed as the shorter text tokenizes it.
        (self._view, self._rows), = run(self.scorer, [plan(self._view, self._rows, self._encoded, final=False)])

    def finish(self, response: str | None = None) -> ScoreResult:
        """The whole trajectory's result, equal to `scorer.score(problem, steps, response)`. The session is left
        as it was (more steps may follow)."""
        if not self._steps:
            raise ValueError(f"session{_where(self.id)} has no steps to finish; add_step first")
        traj = self._trajectory(self._steps, response)
        encoded = self.scorer.encoder.encode(traj, self.scorer.truncate)
        (_, rows), = run(self.scorer, [plan(self._view, self._rows, encoded, final=True)])
        return ScoreResult(**read(self.scorer, encoded, rows, final=True), id=self.id)

    def _trajectory(self, steps, response=None) -> Trajectory:
        return Trajectory(self.problem, tuple(steps), response, self.id)

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, steps={len(self._steps)}, cached_tokens={self.cached_tokens})"


def _where(row_id) -> str:
    return f" {row_id!r}" if row_id is not None else ""


def extend(scorer, sessions: Sequence[Session], texts: Sequence[str]) -> list[float | None]:
    """One new step for each session, in one batched forward; each new step's reward."""
    if isinstance(texts, str) or len(sessions) != len(texts):
        raise ValueError(f"extend takes one step string per session: {len(sessions)} sessions, "
                         f"{'a string' if isinstance(texts, str) else len(texts)} texts")
    return [r[0] for r in _extend(scorer, sessions, [[t] for t in texts])]


def _extend(scorer, sessions: Sequence[Session], new_steps: Sequence[list[str]]) -> list[list[float | None]]:
    for s in sessions:
        if not isinstance(s, Session) or s.scorer is not scorer:
            raise ValueError("extend takes sessions of this scorer (scorer.session(problem))")
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("extend got the same session twice; fork() it for a second branch")
    encoded = [scorer.encoder.encode(s._trajectory(s.steps + tuple(new)), scorer.truncate)
               for s, new in zip(sessions, new_steps)]
    plans = [plan(s._view, s._rows, e, final=False) for s, e in zip(sessions, encoded)]
    done = run(scorer, plans)
    for s, new, e, (view, rows) in zip(sessions, new_steps, encoded, done):
        s._steps, s._encoded, s._view, s._rows = s.steps + tuple(new), e, view, rows
    read = read_many(scorer, encoded, [rows for _, rows in done], final=False)
    return [r["step_rewards"][-len(new):] for r, new in zip(read, new_steps)]
