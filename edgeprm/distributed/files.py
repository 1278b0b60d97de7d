"""Scoring a JSONL or Parquet file on Ray Data, for `edgeprm score --ray` and `edgeprm select --ray`.

`RayScoring` has the interface of `edgeprm.select.pipeline.LocalScoring` (`scored_chunks(path)`), so both commands
write its rows with the same atomic writer as single-process scoring. The file is read by Ray (`read_text` for
JSONL, one row per line, so every row keeps exactly its own fields; `read_parquet` for Parquet), scored by
`score_dataset`'s actor pool, and streamed back to the driver in input order (`preserve_order`), so the output is
the single-process output row for row.

Read tasks reserve no CPU: actors that hold every CPU (2 actors on a 2-core machine) would otherwise leave none for
reading, and the job would wait forever. A file is cut into about `rows / batch_rows` blocks (at most
`MAX_BLOCKS`) so that every actor gets work even from a small file.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeprm.config import ScorerConfig
from edgeprm.distributed.dataset import import_ray, score_dataset
from edgeprm.rows import parse_line
from edgeprm.select.io import count_rows, file_format

MAX_BLOCKS = 512
JSON_COLUMN = "text"  # the column ray.data.read_text fills


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_options):
    """Connect to Ray for the duration: `address` of an existing cluster ('auto', 'ray://head:10001'), or None for
    RAY_ADDRESS / a cluster started on this machine with `ray start` / a new local instance. A session that was
    already open (the caller's `ray.init`) is used as it is and left open."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    ray.init(address=address or None, **init_options)
    try:
        yield ray
    finally:
        ray.shutdown()


def read_dataset(path: str | Path, blocks: int | None = None):
    """A Ray dataset of the file's rows: JSONL as one `text` row per line, Parquet as columns."""
    ray = import_ray()
    path = str(path)
    reader = ray.data.read_text if file_format(path) == "jsonl" else ray.data.read_parquet
    # Newer Ray takes num_cpus itself and deprecates ray_remote_args; older Ray has only the latter.
    named = "num_cpus" in inspect.signature(reader).parameters
    args = {"num_cpus": 0} if named else {"ray_remote_args": {"num_cpus": 0}}
    if blocks is not None:
        args["override_num_blocks"] = blocks
    if reader is ray.data.read_text:
        args["drop_empty_lines"] = True
        return reader(path, **args)
    # Ray 2.60's Parquet reader ("datasource v2") lists files in a task that always reserves a CPU, which the
    # actors may hold; the v1 reader's tasks honour num_cpus=0 (measured: the v2 read never started with 2 actors
    # on 2 CPUs). The dataset keeps the context it was created with, so the switch is undone right after.
    ctx = ray.data.DataContext.get_current()
    v2 = getattr(ctx, "use_datasource_v2", None)
    if v2:
        ctx.use_datasource_v2 = False
    try:
        return reader(path, **args)
    finally:
        if v2:
            ctx.use_datasource_v2 = v2


@dataclass(frozen=True)
class RayScoring:
    """Scores a file on a Ray cluster with `actors` actors, each loading the scorer once.

    model / config: as for `edgeprm.load` (the model path must be readable on every node). address: see
    `ray_session`. cpus_per_actor / gpus_per_actor: reserved per actor. batch_rows: rows per `map_batches` call.
    """

    model: str | None = None
    config: ScorerConfig = ScorerConfig()
    address: str | None = None
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_rows: int = 64

    def __post_init__(self):
        if self.actors < 1 or self.batch_rows < 1:
            raise ValueError(f"--ray-actors and --ray-batch-rows must be >= 1; got {self.actors} and "
                             f"{self.batch_rows}")

    def scored_chunks(self, path: Path, skip: int = 0) -> Iterator[list[dict]]:
        """Lists of output rows in input order (as `LocalScoring.scored_chunks`). Ray reruns a failed task by
        itself; a killed driver starts again from the first row, so `skip` must be 0."""
        if skip:
            raise ValueError(f"--resume is not supported with --ray ({skip} rows already written): Ray Data reruns "
                             "failed tasks itself, but cannot start a file part-way; resume without --ray, or "
                             "delete the part file to start again")
        path = Path(path)
        json_rows = file_format(path) == "jsonl"
        blocks = max(1, min(MAX_BLOCKS, math.ceil(count_rows(path) / self.batch_rows)))
        with ray_session(self.address) as ray:
            ray.data.DataContext.get_current().execution_options.preserve_order = True
            ds = score_dataset(read_dataset(path, blocks), self.model, config=self.config, concurrency=self.actors,
                               batch_size=self.batch_rows, num_cpus=self.cpus_per_actor,
                               num_gpus=self.gpus_per_actor, json_column=JSON_COLUMN if json_rows else None,
                               max_tasks_in_flight_per_actor=1 if self.actors > 1 else None,
                               reads_need_cpu=False)
            for batch in ds.iter_batches(batch_size=self.batch_rows, batch_format="pyarrow"):
                if json_rows:
                    yield [parse_line(t) for t in batch.column(JSON_COLUMN).to_pylist()]
                else:
                    yield batch.to_pylist()
