"""Row files: JSONL and Parquet round trips through the atomic writer, mixed rows, torn lines, clear errors."""

import json
import random

import pyarrow.parquet as pq
import pytest

from edgeprm.select.io import RowWriter, count_rows, file_format, iter_rows, present, valid_jsonl_prefix


def mixed_rows(rng: random.Random, n: int) -> list[dict]:
    """Rows that differ in their fields the way scored files do: steps or solution, a response in a few rows only
    (null in the whole first chunk), truncated rows with null rewards, integer scores in some."""
    out = []
    for i in range(n):
        r = {"id": f"r{i}", "problem": f"What is {i} + {rng.randint(1, 9)}?"}
        if rng.random() < 0.5:
            r["steps"] = [f"step {j} \u00e9 \u2211" for j in range(rng.randint(1, 5))]
        else:
            r["solution"] = "a\n\nb"
        if i > 40 and rng.random() < 0.2:
            r["response"] = "The answer is 4."
        r["step_rewards"] = [rng.random() if rng.random() > 0.1 else None for _ in range(3)]
        r["trajectory_reward"] = None if rng.random() < 0.1 else rng.random()
        r["score"] = rng.choice([0, 1, rng.random()])
        out.append(r)
    return out


def test_parquet_round_trip_keeps_every_value(tmp_path):
    seed = random.randrange(2**32)
    rows = mixed_rows(random.Random(seed), 203)
    with RowWriter(tmp_path / "rows.parquet", chunk_rows=16) as w:
        for r in rows:
            w.write(r)
        assert not (tmp_path / "rows.parquet").exists()  # nothing in place before commit
        w.commit()
    assert file_format(tmp_path / "rows.parquet") == "parquet" and count_rows(tmp_path / "rows.parquet") == 203
    assert pq.ParquetFile(tmp_path / "rows.parquet").metadata.num_row_groups == 13
    back = [row for _, row in iter_rows(tmp_path / "rows.parquet", chunk_rows=7)]
    # A Parquet column has a slot in every row: a field a row lacks reads back as null.
    assert [present(b) for b in back] == [present(r) for r in rows], f"seed {seed}"
    assert all(set(b) == set(back[0]) for b in back)
    assert [w for w, _ in iter_rows(tmp_path / "rows.parquet")][:2] == ["row 1", "row 2"]
    assert not list(tmp_path.glob("*.part*"))


def test_jsonl_writes_like_edgeprm_score_and_resumes_after_a_torn_line(tmp_path):
    rows = mixed_rows(random.Random(), 30)
    out = tmp_path / "out.jsonl"
    w = RowWriter(out)
    for r in rows[:10]:
        w.write(r)
    w.flush()
    w.close()  # killed: the part file stays
    with open(w.part, "a") as f:
        f.write('{"id": "torn", "prob')
    w = RowWriter(out, append=True)
    assert w.count == 10
    for r in rows[10:]:
        w.write(r)
    w.commit()
    assert out.read_text() == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert [r for _, r in iter_rows(out)] == rows


def test_valid_prefix_cuts_a_line_without_newline(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}')
    assert valid_jsonl_prefix(p) == 2 and p.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"cannot tell the format of 'rows.csv' from its name"):
        file_format("rows.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(iter_rows(tmp_path / "missing.jsonl"))
    w = RowWriter(tmp_path / "bad.parquet", chunk_rows=2)
    for v in ["a", "b", 3, 4]:
        w.write({"x": v})
    with pytest.raises(ValueError, match=r"a field changes type between rows .*write JSONL instead"):
        w.commit()
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"broken.jsonl line 3: a row must be a JSON object; got list"):
        list(iter_rows(tmp_path / "broken.jsonl"))
