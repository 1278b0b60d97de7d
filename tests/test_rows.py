"""JSONL rows: errors that name the file and line, round trips, grouping into Best-of-N groups."""

import json
import random

import pytest

from edgeprm.rows import group_label, group_rows, iter_jsonl, parse_line, read_jsonl, write_jsonl


def test_round_trip_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    rows = [{"id": str(i), "problem": "π ≈ 3.14", "steps": ["a"] * random.randint(1, 4)} for i in range(7)]
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(rows, path) == 7
    assert read_jsonl(path) == rows
    path.write_text("\n" + path.read_text().replace("\n", "\n\n", 1))
    assert [n for n, _ in iter_jsonl(path)] == [2, 4, 5, 6, 7, 8, 9]


def test_bad_lines_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": 1}) + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad.jsonl line 2: a row must be a JSON object; got list"):
        read_jsonl(path)
    with pytest.raises(ValueError, match=r"^not valid JSON \(Expecting value at column 1\)$"):
        parse_line("oops")


def test_groups_by_key_else_by_problem_in_first_seen_order():
    rows = [{"problem": "p", "group": 1}, {"problem": "q"}, {"problem": "p"}, {"problem": "r", "group": 1},
            {"problem": "q"}]
    assert group_rows(rows) == {"group=1": [0, 3], "problem=q": [1, 4], "problem=p": [2]}
    assert group_label({"problem_id": "x"}, "problem_id") == "problem_id=x"
    assert group_rows([]) == {}
