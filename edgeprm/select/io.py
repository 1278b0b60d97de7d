"""Row files in and out: JSONL (one JSON object per line) and Parquet (via pyarrow), read and written in chunks.

The format comes from the file name (`.jsonl`/`.json`/`.ndjson`, `.parquet`/`.pq`). Reading yields `(where, row)`
pairs, `where` being "line 7" (JSONL, 1-based, blank lines skipped) or "row 7" (Parquet), so an error can name the
row. Writing is atomic: `RowWriter` writes to `PATH.part` and renames it to `PATH` on `commit()`.

Parquet needs one type per column, known before the first row group is written, while rows arrive one at a time
and a field may be null in every row of the first chunk and a string later. So `RowWriter` spools rows as JSONL and
writes the Parquet file at `commit()` in two bounded passes over the spool: the schemas of all chunks unified
(`pyarrow.unify_schemas`, permissive: null -> string, int -> double), then one row group per chunk in that schema.
Memory stays at one chunk either way. Torch-free; pyarrow is imported only for Parquet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from edgeprm.rows import iter_jsonl

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 1024
PARQUET_HINT = 'Parquet needs pyarrow: pip install "edgeprm[data]"'


def file_format(path: str | Path) -> str:
    """'jsonl' or 'parquet', from the file name's suffix."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {str(path)!r} from its name: expected a name ending in one of "
                         f"{sorted(FORMATS)} (JSONL or Parquet)")
    return fmt


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(PARQUET_HINT) from None
    return pa, pq


def iter_rows(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[str, dict]]:
    """(where, row) for every row of a JSONL or Parquet file, streaming (Parquet in batches of `chunk_rows`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if file_format(path) == "jsonl":
        for n, row in iter_jsonl(path):
            yield f"line {n}", row
        return
    _, pq = _pyarrow()
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        for row in batch.to_pylist():
            n += 1
            yield f"row {n}", row


def present(row: dict) -> dict:
    """The fields of a row that hold a value. A Parquet column has a slot in every row, so a field a row lacks
    reads as null (a JSONL row with "solution" gets "steps": null next to it); the scorer is given this view."""
    return {k: v for k, v in row.items() if v is not None}


def count_rows(path: str | Path) -> int:
    """Rows in the file: Parquet from its footer, JSONL by counting non-blank lines (for progress bars)."""
    path = Path(path)
    if file_format(path) == "parquet":
        return _pyarrow()[1].ParquetFile(path).metadata.num_rows
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def valid_jsonl_prefix(path: Path) -> int:
    """Number of complete JSON lines at the start of `path`; the file is cut after them (a run killed mid-write
    leaves a torn last line). 0 when the file does not exist."""
    if not path.is_file():
        return 0
    n, good = 0, 0
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                json.loads(line)
            except json.JSONDecodeError:
                break
            n += 1
            good += len(line)
    with path.open("r+b") as f:
        f.truncate(good)
    return n


class RowWriter:
    """Writes rows to `path` (JSONL or Parquet by its name) through `path.part`, renamed on `commit()`.

    `append=True` keeps the complete rows already written by an earlier run (a resumed run; a torn last line is
    cut). `close()` without `commit()`
    leaves the part file for a later `--resume`.
    """

    def __init__(self, path: str | Path, append: bool = False, chunk_rows: int = CHUNK_ROWS):
        self.path = Path(path)
        self.format = file_format(self.path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.spool = self.part if self.format == "jsonl" else self.path.with_name(self.path.name + ".part.jsonl")
        if self.format == "parquet":
            _pyarrow()  # fail before any work is spent, not at commit
        if append and self.spool.exists():
            self.count = valid_jsonl_prefix(self.spool)
        else:
            self.count = 0
        self.chunk_rows = chunk_rows
        self._f = self.spool.open("a" if append else "w", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.count += 1

    def flush(self) -> None:
        """Make what was written durable (a kill after this loses nothing written before it)."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def commit(self) -> Path:
        """Finish the file and move it into place in one step; returns the path."""
        self.flush()
        self.close()
        if self.format == "parquet":
            jsonl_to_parquet(self.spool, self.part, self.chunk_rows)
            self.spool.unlink()
        os.replace(self.part, self.path)
        return self.path

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[list[dict]]:
    chunk = []
    for _, row in iter_jsonl(path):
        chunk.append(row)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def jsonl_to_parquet(src: Path, dst: Path, chunk_rows: int = CHUNK_ROWS) -> int:
    """Convert a JSONL file to Parquet in two streaming passes (unified schema, then one row group per chunk)."""
    pa, pq = _pyarrow()
    schema = None
    for i, chunk in enumerate(_jsonl_chunks(src, chunk_rows)):
        s = _chunk_table(pa, chunk, None, i * chunk_rows).schema
        try:
            schema = s if schema is None else pa.unify_schemas([schema, s], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"cannot write {dst.name} as Parquet: a field changes type between rows "
                             f"({e}); Parquet needs one type per column — write JSONL instead") from None
    if schema is None:
        schema = pa.schema([])
    n = 0
    with pq.ParquetWriter(dst, schema) as w:
        for i, chunk in enumerate(_jsonl_chunks(src, chunk_rows)):
            w.write_table(_chunk_table(pa, chunk, schema, i * chunk_rows))
            n += len(chunk)
    return n


def _chunk_table(pa, chunk: list[dict], schema, first: int):
    try:
        if schema is not None:
            return pa.Table.from_pylist(chunk, schema=schema)
        # from_pylist would take the columns from the first row alone: a field only later rows have would be lost.
        keys = dict.fromkeys(k for row in chunk for k in row)
        return pa.Table.from_pydict({k: [row.get(k) for row in chunk] for k in keys})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"cannot write rows {first + 1}-{first + len(chunk)} as Parquet: {e}; Parquet needs one "
                         "type per column — write JSONL instead") from None
