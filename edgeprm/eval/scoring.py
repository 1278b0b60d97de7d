"""Scoring an evaluation's rows with one scorer: every row checked before work starts, batches by length, one
progress bar, and per-row predictions written as they come so that an interrupted run resumes where it stopped.

The predictions file is JSONL, one row per scored input: `key` (unique in the evaluation), `scorer` (what scored
it: `Variant.describe()`), the `ScoreResult` fields (`step_rewards`, `trajectory_reward`, `score`, `truncated`,
`num_tokens`), and what the task adds (ProcessBench: `split`, `label`, `prediction`; Best-of-N: `group`,
`is_correct`, `answer`). While scoring, rows are appended and flushed chunk by chunk; at the end the file is
rewritten in input order, in one step. With `resume`, rows already in the file are kept (when the same scorer wrote
them for the same steps) and only the others are scored; a torn last line (a kill mid-write) is scored again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from edgeprm.encoding import TooLongError

RESULT_FIELDS = ("step_rewards", "trajectory_reward", "score", "truncated", "num_tokens")


def read_predictions(path: Path, scorer: str, n_steps: dict[str, int]) -> dict[str, dict]:
    """{key: result fields} of a predictions file, checked against this run: the same scorer, keys of this data,
    the same step counts. A torn last line is dropped."""
    out: dict[str, dict] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break  # the run was killed mid-write: that row is scored again
            raise ValueError(f"{path} line {n}: not valid JSON; it is not a predictions file of `edgeprm eval`, "
                             "pass another --predictions path") from None
        where = f"{path} line {n}"
        if not isinstance(row, dict) or "key" not in row or any(k not in row for k in RESULT_FIELDS):
            raise ValueError(f"{where}: not a prediction row (needs 'key', 'scorer' and {', '.join(RESULT_FIELDS)}); "
                             "pass another --predictions path")
        key = row["key"]
        if row.get("scorer") != scorer:
            raise ValueError(f"{where}: row {key!r} was scored by {row.get('scorer')!r}, not by this run's "
                             f"{scorer!r}; pass another --predictions path, or delete {path}")
        if key not in n_steps:
            raise ValueError(f"{where}: row {key!r} is not in this evaluation's data; pass another --predictions "
                             f"path, or delete {path}")
        if len(row["step_rewards"]) != n_steps[key]:
            raise ValueError(f"{where}: row {key!r} has {len(row['step_rewards'])} step rewards but the data has "
                             f"{n_steps[key]} steps; pass another --predictions path, or delete {path}")
        out[key] = {k: row[k] for k in RESULT_FIELDS}
    return out


def _too_long_error(scorer, too_long: list[tuple[str, int]], total: int) -> ValueError:
    first = ", ".join(f"{k!r} ({n} tokens)" for k, n in too_long[:3])
    return ValueError(f"{len(too_long)} of {total} rows are longer than the model's limit of {scorer.max_length} "
                      f"tokens (first: {first}); pass --truncate to score the steps that fit (a truncated row is "
                      "judged on its kept steps, and the report counts them), or --max-length if the model allows")


def score_rows(scorer, rows: Sequence[dict], keys: Sequence[str], scorer_name: str, *,
               predictions: Path | None = None, resume: bool = False, progress: bool = True,
               chunk_rows: int = 64, counts: dict | None = None) -> list[dict]:
    """The result fields (`RESULT_FIELDS`) of every row, in row order.

    rows: scorer inputs (`{"id"?, "problem", "steps"|"solution", "response"?}`); keys: their unique names. Every row
    is checked and encoded first (a bad row is a ValueError naming it; rows over the length limit are counted in
    one error that suggests --truncate), then scored shortest first in chunks of `chunk_rows`, each chunk appended
    to `predictions` and flushed. `counts`, when given, receives {"kept": rows taken from `predictions`,
    "scored": rows scored now}.
    """
    if len(rows) != len(keys) or len(set(keys)) != len(keys):
        raise ValueError("every row needs one unique key")
    from edgeprm.trajectory import as_trajectory

    trajectories = []
    for k, row in zip(keys, rows):
        try:
            trajectories.append(as_trajectory(row, scorer.encoder.split))
        except ValueError as e:
            raise ValueError(f"row {k!r}: {e}") from None
    n_steps = {k: len(t.steps) for k, t in zip(keys, trajectories)}
    done: dict[str, dict] = {}
    if predictions is not None and predictions.exists():
        if not resume:
            raise ValueError(f"{predictions} already exists; pass --resume to keep its rows and score the rest, or "
                             "delete it")
        done = read_predictions(predictions, scorer_name, n_steps)
    todo = [i for i, k in enumerate(keys) if k not in done]
    if counts is not None:
        counts.update(kept=len(done), scored=len(todo))
    prepared, too_long = {}, []
    for i in todo:
        try:
            prepared[i] = scorer.prepare(trajectories[i])
        except TooLongError:
            too_long.append((keys[i], scorer.encoder.encode(trajectories[i], True).full_length))
        except ValueError as e:
            raise ValueError(f"row {keys[i]!r}: {e}") from None
    if too_long:
        raise _too_long_error(scorer, too_long, len(rows))
    order = sorted(todo, key=lambda i: prepared[i].num_tokens)  # like lengths share chunks: little padding
    out = None
    if predictions is not None:
        predictions.parent.mkdir(parents=True, exist_ok=True)
        out = predictions.open("a", encoding="utf-8")
    from tqdm.auto import tqdm

    try:
        with tqdm(total=len(rows), initial=len(done), unit="row", desc=f"scoring ({scorer_name})",
                  disable=not progress) as bar:
            for start in range(0, len(order), chunk_rows):
                chunk = order[start : start + chunk_rows]
                for i, r in zip(chunk, scorer.score_prepared([prepared[i] for i in chunk])):
                    done[keys[i]] = {k: v for k, v in r.to_dict(with_id=False).items() if k in RESULT_FIELDS}
                    if out is not None:
                        out.write(json.dumps({"key": keys[i], "scorer": scorer_name, **done[keys[i]]}) + "\n")
                if out is not None:
                    out.flush()
                    os.fsync(out.fileno())
                bar.update(len(chunk))
    finally:
        if out is not None:
            out.close()
    return [done[k] for k in keys]


def write_predictions(path: Path, keys: Sequence[str], scorer_name: str, results: Sequence[dict],
                      extra: Callable[[int], dict]) -> None:
    """Rewrite the predictions file in input order, in one step (a temporary file renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i, (k, r) in enumerate(zip(keys, results)):
            f.write(json.dumps({"key": k, "scorer": scorer_name, **extra(i), **r}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
