"""`score_dataset`: a Ray Data `Dataset` of trajectories -> the same dataset with the reward columns.

Batches go through an actor pool (`map_batches` with the callable class `ScoreBatch` and
`ray.data.ActorPoolStrategy`): each actor loads the scorer once, in its constructor, and scores every batch it is
given with `scorer.score_batch`, the call single-process scoring makes, so the rewards are the same row for row
(results never depend on how rows are batched). Batches travel as pyarrow Tables; the reward columns are typed
explicitly (`step_rewards` list<double> with nulls for cut steps, `trajectory_reward` double, `score` double,
`truncated` bool, `num_tokens` int64).

Two row layouts:
- columns (default): `problem`, `steps` (list<string>) or `solution`, optional `response`, `id`; a null field
  counts as absent. The reward columns are added (replacing any of the same name).
- one JSON object per row in a string column (`json_column="text"`, as `ray.data.read_text` reads a JSONL file):
  the column is replaced by the output row, input fields exactly as written plus the rewards, as `edgeprm score`
  writes it. JSONL rows often differ in their fields, which an Arrow schema would turn into nulls; this layout
  keeps them as they are.

Running on a cluster, GPUs, and how many actors fit: see edgeprm/distributed/README.md.
"""

from __future__ import annotations

import json
import warnings

from edgeprm.config import ScorerConfig
from edgeprm.rows import parse_line
from edgeprm.select.io import present

REWARD_COLUMNS = ("step_rewards", "trajectory_reward", "score", "truncated", "num_tokens")
RAY_HINT = 'Ray Data is not installed: pip install "edgeprm[data]"'


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ValueError(RAY_HINT) from None
    return ray


class ScoreBatch:
    """The callable class of the actor pool: loads the scorer once per actor, then scores pyarrow batches."""

    def __init__(self, model, config: ScorerConfig, json_column: str | None = None):
        import edgeprm

        self.scorer = edgeprm.load(model, config=config)
        self.json_column = json_column

    def __call__(self, batch):
        import pyarrow as pa

        if self.json_column is not None:
            lines = batch.column(self.json_column).to_pylist()
            rows = [parse_line(t, f"{self.json_column} row {i + 1} of a batch") for i, t in enumerate(lines)]
            results = self.scorer.score_batch(rows)
            out = [json.dumps({**row, **r.to_dict(with_id=False)}, ensure_ascii=False) for row, r in zip(rows, results)]
            i = batch.column_names.index(self.json_column)
            return batch.set_column(i, self.json_column, pa.array(out, type=pa.string()))
        results = self.scorer.score_batch([present(row) for row in batch.to_pylist()])
        columns = {
            "step_rewards": pa.array([r.step_rewards for r in results], type=pa.list_(pa.float64())),
            "trajectory_reward": pa.array([r.trajectory_reward for r in results], type=pa.float64()),
            "score": pa.array([r.score for r in results], type=pa.float64()),
            "truncated": pa.array([r.truncated for r in results], type=pa.bool_()),
            "num_tokens": pa.array([r.num_tokens for r in results], type=pa.int64()),
        }
        batch = batch.drop_columns([c for c in REWARD_COLUMNS if c in batch.column_names])
        for name, values in columns.items():
            batch = batch.append_column(name, values)
        return batch


def actor_pool(concurrency: int | tuple[int, int], max_tasks_in_flight_per_actor: int | None = None):
    """`ray.data.ActorPoolStrategy` of a fixed size (int) or autoscaling between (min, max)."""
    ray = import_ray()
    if isinstance(concurrency, int):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 actor; got {concurrency}")
        sizes = {"size": concurrency}
    else:
        lo, hi = concurrency
        if not 1 <= lo <= hi:
            raise ValueError(f"concurrency (min, max) must have 1 <= min <= max; got {concurrency}")
        sizes = {"min_size": lo, "max_size": hi}
    return ray.data.ActorPoolStrategy(**sizes, max_tasks_in_flight_per_actor=max_tasks_in_flight_per_actor)


def score_dataset(ds, model=None, *, config: ScorerConfig | None = None, concurrency: int | tuple[int, int] = 1,
                  batch_size: int = 64, num_cpus: float = 1.0, num_gpus: float = 0.0, json_column: str | None = None,
                  max_tasks_in_flight_per_actor: int | None = None, reads_need_cpu: bool = True, **options):
    """Score a Ray Data dataset of trajectories with an actor pool; returns the (lazy) dataset with the rewards.

    model, config, **options: as for `edgeprm.load` (a checkpoint directory every node can read, a hub id, or None
    for the bundled demo PRM). concurrency: actors, fixed (int) or autoscaling (min, max). batch_size: rows per
    call (the scorer batches them by length inside). num_cpus / num_gpus: reserved per actor; with num_gpus > 0
    each actor sees its GPU(s) and `device="auto"` uses them. json_column: the row layout (module docstring).
    max_tasks_in_flight_per_actor: batches queued per actor (Ray's default is 4; 1 spreads a small input over
    every actor).

    Row order: Ray Data keeps it only with `ray.data.DataContext.get_current().execution_options.preserve_order =
    True` (the CLI sets it). Actors occupying every CPU leave none for the read tasks and the job waits forever (a
    known Ray Data limitation): read with `num_cpus=0` (then pass reads_need_cpu=False to silence the warning
    about it) or leave a CPU free.
    """
    ray = import_ray()
    cfg = ScorerConfig.from_options(**{**(config.to_options() if config is not None else {}), **options})
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 row; got {batch_size}")
    if num_cpus < 0 or num_gpus < 0:
        raise ValueError(f"num_cpus and num_gpus per actor must be >= 0; got {num_cpus} and {num_gpus}")
    compute = actor_pool(concurrency, max_tasks_in_flight_per_actor)
    if reads_need_cpu and ray.is_initialized():
        cpus = ray.cluster_resources().get("CPU", 0.0)
        most = concurrency if isinstance(concurrency, int) else concurrency[1]
        if cpus and most * num_cpus >= cpus:
            warnings.warn(f"{most} actors x {num_cpus} CPUs take all {cpus:g} CPUs of the Ray cluster: read tasks "
                          "that need a CPU cannot run and the job waits; read with num_cpus=0 (as the CLI does), "
                          "or use fewer actors or fewer CPUs per actor", stacklevel=2)
    return ds.map_batches(ScoreBatch, fn_constructor_kwargs={"model": model, "config": cfg,
                                                             "json_column": json_column},
                          batch_size=batch_size, batch_format="pyarrow", compute=compute,
                          num_cpus=num_cpus, num_gpus=num_gpus or None)
