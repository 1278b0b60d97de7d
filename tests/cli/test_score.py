"""`edgeprm score`: one row out per row in, bad rows, resume after a kill, GSM8K through the CLI."""

import json
import math
import subprocess
import sys

import pytest

import edgeprm
from edgeprm.cli import main
from edgeprm.datasets import gsm8k_rows
from edgeprm.rows import write_jsonl
from edgeprm.testing import build_step_classifier, build_tokenizer

from ..conftest import GSM8K
from ..helpers import BLOCK_TORCH, kill_after


def rows(n, start=0, with_ids=True):
    out = []
    for i in range(start, start + n):
        r = {"problem": f"What is {i} + {i % 7}?", "solution": f"{i} + {i % 7} = {2 * i % 7 + i}.\n\nSo {i}."}
        if i % 3 == 0:
            r = {"problem": r["problem"], "steps": [f"add {i}", f"then {i % 7}", "done"], "response": "ok"}
        if with_ids:
            r["id"] = f"r{i}"
        out.append(r)
    return out


def read(path):
    return [json.loads(x) for x in open(path, encoding="utf-8")]


def run_cli(*args):
    return main(["score", *map(str, args), "-q"])


def test_score_writes_one_row_per_input(tmp_path, checkpoints):
    src = tmp_path / "in.jsonl"
    write_jsonl(rows(20), src)
    assert run_cli(src, "-o", tmp_path / "out.jsonl", "--model", checkpoints["step-classifier"]) == 0
    out = read(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [f"r{i}" for i in range(20)]
    for r, orig in zip(out, rows(20)):
        assert {k: r[k] for k in orig} == orig  # input fields kept as they were
        n = len(orig["steps"]) if "steps" in orig else len(orig["solution"].split("\n\n"))
        assert len(r["step_rewards"]) == n and isinstance(r["score"], float)
    assert not (tmp_path / "out.jsonl.part").exists()


def test_bad_row_stops_with_line_number_and_keeps_rows(tmp_path, checkpoints, capsys):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in rows(10)]
    lines[6] = '{"id": "r6", "problem": "p", "steps": ["fine", ""]}'
    lines[8] = "{broken json"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    model = checkpoints["value-head"]
    assert run_cli(src, "-o", out, "--model", model, "--chunk-rows", "4") == 1
    err = capsys.readouterr().err
    assert "line 7: step 1 is empty for id 'r6'" in err and "6 scored rows are kept" in err
    assert [r["id"] for r in read(str(out) + ".part")] == [f"r{i}" for i in range(6)]
    assert not out.exists()
    # --skip-bad records both bad rows and goes on; --resume keeps what is already written.
    assert run_cli(src, "-o", out, "--model", model, "--resume", "--skip-bad") == 0
    err = capsys.readouterr().err
    assert "2 bad rows" in err and "6 kept from an earlier run" in err
    assert [r["id"] for r in read(out)] == [f"r{i}" for i in (0, 1, 2, 3, 4, 5, 7, 9)]
    bad = read(str(out) + ".errors.jsonl")
    assert [b["line"] for b in bad] == [7, 9] and "not valid JSON" in bad[1]["error"]


def test_unfinished_run_needs_resume(tmp_path, checkpoints):
    src = tmp_path / "in.jsonl"
    write_jsonl(rows(3), src)
    (tmp_path / "out.jsonl.part").write_text("")
    assert run_cli(src, "-o", tmp_path / "out.jsonl", "--model", checkpoints["value-head"]) == 2


@pytest.mark.parametrize("with_ids", [True, False])
def test_resume_after_a_killed_run(tmp_path, checkpoints, with_ids):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 800
    write_jsonl(rows(n, with_ids=with_ids), src)
    part = tmp_path / "out.jsonl.part"
    cmd = [sys.executable, "-m", "edgeprm.cli", "score", str(src), "-o", str(out), "--model",
           str(checkpoints["step-classifier"]), "--chunk-rows", "8", "-q"]
    written = kill_after(cmd, part, 16, timeout=120)
    assert 0 < written < n and not out.exists()
    with part.open("a") as f:  # a torn last line, as a kill mid-write leaves it
        f.write('{"id": "torn", "problem": "x", "st')
    assert run_cli(src, "-o", out, "--model", checkpoints["step-classifier"], "--resume") == 0
    got = read(out)
    assert len(got) == n
    assert [r["problem"] for r in got] == [r["problem"] for r in rows(n, with_ids=with_ids)]
    # Rows scored before the kill equal the same rows scored afresh.
    fresh = tmp_path / "fresh.jsonl"
    write_jsonl(rows(40, with_ids=with_ids), src)
    assert run_cli(src, "-o", fresh, "--model", checkpoints["step-classifier"]) == 0
    for a, b in zip(got[:40], read(fresh)):
        assert a["step_rewards"] == pytest.approx(b["step_rewards"], abs=1e-5)


@pytest.mark.skipif(not GSM8K.is_file(), reason=f"real data not present at {GSM8K}")
def test_gsm8k_all_solutions_through_the_cli(tmp_path, checkpoints, capsys):
    src, out = tmp_path / "gsm8k.jsonl", tmp_path / "scored.jsonl"
    n = write_jsonl(gsm8k_rows(GSM8K), src)
    assert n == 5276
    # A tokenizer trained on the data's own words, like a real PRM's large vocabulary, keeps sequences short.
    texts = [r["problem"] + "\n" + "\n".join(r["steps"]) for r in gsm8k_rows(GSM8K)]
    build_tokenizer(tmp_path / "tok", vocab_size=4000, corpus=texts)
    model = build_step_classifier(tmp_path / "model", seed=3, tokenizer_dir=tmp_path / "tok")
    assert run_cli(src, "-o", out, "--model", model, "--token-budget", "16384") == 0
    print(capsys.readouterr().err.strip().splitlines()[-1], file=sys.stderr)  # the rows/s summary
    got = read(out)
    assert len(got) == n and [r["id"] for r in got] == [r["id"] for r in gsm8k_rows(GSM8K)]
    for r in got:
        assert len(r["step_rewards"]) == len(r["steps"])
        assert all(math.isfinite(x) for x in [*r["step_rewards"], r["trajectory_reward"], r["score"]])


# `edgeprm score` as a device without torch runs it: importing torch or transformers raises ImportError.
TORCH_FREE_CLI = BLOCK_TORCH + r"""
import runpy
sys.argv = ["edgeprm", *sys.argv[1:]]
runpy.run_module("edgeprm.cli", run_name="__main__")
"""


@pytest.mark.parametrize("family", ["step-classifier", "value-head"])
def test_score_with_the_onnx_backend_runs_without_torch_and_matches_the_python_api(tmp_path, bundle, family):
    pytest.importorskip("onnxruntime")
    path = bundle(family)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(rows(12), src)
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE_CLI, "score", str(src), "-o", str(out), "--backend",
                           "onnx", "--model", str(path), "--chunk-rows", "5", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = read(out)
    want = edgeprm.load(path, backend="onnx").score_batch(rows(12))
    assert [r["id"] for r in got] == [w.id for w in want]
    for row, w in zip(got, want):
        assert {k: row[k] for k in w.to_dict(with_id=False)} == w.to_dict(with_id=False)
