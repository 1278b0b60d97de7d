"""JSONL rows, the unit every command reads and writes, and their grouping into Best-of-N groups (torch-free).

A row is one JSON object per line: the input schema `{"id"?, "problem", "steps"|"solution", "response"?}` plus
whatever a tool adds (`step_rewards`, `trajectory_reward`, `score`, `is_correct`, `group`, ...). Errors name the file
and the 1-based line, so a user can find the row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path


def parse_line(text: str, where: str | None = None) -> dict:
    """One JSONL line -> a dict; `where` ("in.jsonl line 7"), when given, leads the error message."""
    lead = f"{where}: " if where else ""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{lead}not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{lead}a row must be a JSON object; got {type(row).__name__}")
    return row


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) for every non-blank line of a JSONL file."""
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, parse_line(line, f"{path} line {n}")


def read_jsonl(path: str | Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path)]


def write_jsonl(rows: Iterable[dict], path: str | Path) -> int:
    """Write rows (UTF-8, one JSON object per line); returns how many."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def group_label(row: dict, key: str = "group", fallback: str = "problem") -> str:
    """The Best-of-N group a row belongs to: its `key` field when present, else its `fallback` field (the problem
    text), as 'key=value' so that the two kinds of label never collide."""
    value = row.get(key)
    return f"{key}={value}" if value is not None else f"{fallback}={row.get(fallback)}"


def group_rows(rows: Iterable[dict], key: str = "group", fallback: str = "problem") -> dict[str, list[int]]:
    """Indices of the rows of each group (see `group_label`), groups and members in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(group_label(row, key, fallback), []).append(i)
    return groups
