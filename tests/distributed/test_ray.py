"""Ray Data scoring gives the single-process results row for row: `edgeprm score --ray` with 2 actors on a local
Ray instance (2 CPUs, stopped at the end), and `score_dataset` on a columnar dataset."""

import json
import math
import random

import pytest

import edgeprm
from edgeprm.cli import main
from edgeprm.distributed import REWARD_COLUMNS
from edgeprm.rows import read_jsonl, write_jsonl

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

# Different batch shapes round float32 logits differently; the project's batching tests hold this bound too.
ATOL = 1e-5


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def mixed_rows(rng: random.Random, n: int) -> list[dict]:
    """Rows as users write them: steps or a solution, a response in some, an id in most, extra fields kept."""
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 9)
        r = {"problem": f"Tom has {a} apples and buys {b} more. How many?"}
        if rng.random() < 0.5:
            r["steps"] = [f"{a} + {b} = {a + b + rng.choice([0, 0, 1])}", f"The answer is {a + b}."]
        else:
            r["solution"] = f"{a} + {b} = {a + b}.\n\nSo {a + b}."
        if rng.random() < 0.3:
            r["response"] = f"{a + b}"
        if rng.random() < 0.9:
            r["id"] = f"r{i}"
        r["source"] = rng.choice(["x", "y"])
        out.append(r)
    return out


def assert_same(got: list[dict], want: list[dict]):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert {k: v for k, v in a.items() if k not in REWARD_COLUMNS} == \
               {k: v for k, v in b.items() if k not in REWARD_COLUMNS}
        assert (a["truncated"], a["num_tokens"], len(a["step_rewards"])) == (b["truncated"], b["num_tokens"],
                                                                             len(b["step_rewards"]))
        for x, y in zip([*a["step_rewards"], a["trajectory_reward"], a["score"]],
                        [*b["step_rewards"], b["trajectory_reward"], b["score"]]):
            assert math.isclose(x, y, abs_tol=ATOL), (a.get("id"), x, y)


def test_score_with_ray_equals_single_process(local_ray, checkpoints, tmp_path):
    seed = random.randrange(2**32)
    src = tmp_path / "in.jsonl"
    write_jsonl(mixed_rows(random.Random(seed), 150), src)
    model = checkpoints["step-classifier"]
    assert main(["score", str(src), "-o", str(tmp_path / "local.jsonl"), "--model", str(model), "-q"]) == 0
    assert main(["score", str(src), "-o", str(tmp_path / "ray.jsonl"), "--model", str(model), "-q", "--ray",
                 "--ray-actors", "2", "--ray-batch-rows", "16"]) == 0
    local, dist = read_jsonl(tmp_path / "local.jsonl"), read_jsonl(tmp_path / "ray.jsonl")
    # Same rows in the same order, none twice: each row's fields are exactly the input's (no nulls added).
    assert [r.get("id") for r in dist] == [r.get("id") for r in local]
    ids = [r["id"] for r in dist if "id" in r]
    assert len(ids) == len(set(ids))
    assert_same(dist, local)
    assert ray.is_initialized()  # the CLI used the open session and left it open


def test_score_dataset_on_parquet_adds_typed_reward_columns(local_ray, checkpoints, tmp_path):
    """Columns, not JSON lines: a Parquet file of mixed rows (a null 'steps' next to a 'solution' counts as absent),
    read with the CLI's reader, two actors holding both CPUs (the reads reserve none)."""
    import pyarrow as pa

    from edgeprm.distributed import score_dataset
    from edgeprm.distributed.files import read_dataset
    from edgeprm.select.io import RowWriter, iter_rows, present

    with RowWriter(tmp_path / "in.parquet", chunk_rows=20) as w:
        for r in mixed_rows(random.Random(), 90):
            w.write(r)
        w.commit()
    rows = [row for _, row in iter_rows(tmp_path / "in.parquet")]
    model = checkpoints["value-head"]
    out = score_dataset(read_dataset(tmp_path / "in.parquet", blocks=6), model, device="cpu", concurrency=2,
                        batch_size=8, num_cpus=1, max_tasks_in_flight_per_actor=1, reads_need_cpu=False)
    table = pa.concat_tables(list(out.iter_batches(batch_format="pyarrow", batch_size=None)))
    assert table.schema.field("step_rewards").type == pa.list_(pa.float64())
    assert table.schema.field("num_tokens").type == pa.int64()
    scorer = edgeprm.load(model, device="cpu")
    # This dataset was not asked to keep its order: compare rows sorted by their input fields.
    key = lambda r: json.dumps(present({k: r[k] for k in r if k not in REWARD_COLUMNS}), sort_keys=True)  # noqa: E731
    got = sorted(table.to_pylist(), key=key)
    want = sorted(({**r, **s.to_dict(with_id=False)} for r, s in zip(rows, scorer.score_batch(map(present, rows)))),
                  key=key)
    assert_same(got, want)
