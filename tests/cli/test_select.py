"""`edgeprm select` on the GSM8K Best-of-4 set with the demo PRM: top-1 per problem is `best_of_n`, threshold and
top-fraction counts, resume after a kill, Parquet in and out; bad rows and unscored input without a model."""

import json
import math
import random
import sys

import pyarrow.parquet as pq
import pytest

import edgeprm
from edgeprm.cli import main
from edgeprm.datasets import gsm8k_rows
from edgeprm.rows import group_rows, read_jsonl, write_jsonl
from edgeprm.select.policy import rank_key
from edgeprm.trajectory import Trajectory

from ..conftest import GSM8K
from ..helpers import kill_after

pytestmark = pytest.mark.skipif(not GSM8K.is_file(), reason=f"real data not present at {GSM8K}")
PROBLEMS = 24  # of 1,319, drawn afresh every run: 96 trajectories
# Relative: scores this close can swap between batchings. Other batch shapes round float32 logits differently (up to
# ~2e-5 here), and a small probability moves by about that much relative to itself.
NEAR_TIE = 1e-4


def select(*args):
    return main(["select", *map(str, args), "-q"])


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory):
    """A random subset of GSM8K problems with all four solutions each, the demo PRM's best_of_n pick of every
    problem, and every candidate's reference score."""
    seed = random.randrange(2**32)
    chosen = set(random.Random(seed).sample(range(1319), PROBLEMS))
    rows = [r for r in gsm8k_rows(GSM8K) if int(r["group"]) in chosen]
    root = tmp_path_factory.mktemp("select")
    write_jsonl(rows, root / "in.jsonl")
    scorer = edgeprm.load(device="cpu")
    picks, scores = {}, {}
    for idx in group_rows(rows).values():
        best, results = scorer.best_of_n(rows[idx[0]]["problem"],
                                         [Trajectory(rows[i]["problem"], rows[i]["steps"], id=rows[i]["id"])
                                          for i in idx])
        picks[rows[idx[0]]["group"]] = [rows[i]["id"] for i in idx], best
        scores.update({r.id: r.score for r in results})
    return {"seed": seed, "root": root, "rows": rows, "picks": picks, "scores": scores}


@pytest.fixture(scope="module")
def top1(gsm8k):
    """The uninterrupted run: top-1 per problem, every scored row kept in scored.jsonl."""
    root = gsm8k["root"]
    assert select(root / "in.jsonl", "-o", root / "top1.jsonl", "--top-k", 1, "--group-key", "group",
                  "--scored-output", root / "scored.jsonl") == 0
    return root / "top1.jsonl"


def near_tie(scores, a, b):
    return abs(scores[a] - scores[b]) <= NEAR_TIE * max(abs(scores[a]), abs(scores[b]))


def test_top_1_per_problem_is_best_of_n(gsm8k, top1):
    kept = read_jsonl(top1)
    assert len(kept) == PROBLEMS and len({r["group"] for r in kept}) == PROBLEMS
    by_group = {r["group"]: r["id"] for r in kept}
    ties = 0
    for group, (ids, best) in gsm8k["picks"].items():
        if by_group[group] != ids[best]:
            assert near_tie(gsm8k["scores"], by_group[group], ids[best]), f"seed {gsm8k['seed']} group {group}"
            ties += 1
    assert ties <= 2, f"seed {gsm8k['seed']}: {ties} problems picked differently"
    # Kept rows are whole scored rows, in input order.
    order = [r["id"] for r in gsm8k["rows"]]
    assert [r["id"] for r in kept] == sorted(by_group.values(), key=order.index)
    assert all(len(r["step_rewards"]) == len(r["steps"]) and r["is_correct"] in (True, False) for r in kept)
    summary = json.loads(top1.with_name("top1.jsonl.summary.json").read_text())
    assert (summary["rows"], summary["kept"], summary["groups"], summary["already_scored"]) == (
        4 * PROBLEMS, PROBLEMS, PROBLEMS, False)
    assert not list(gsm8k["root"].glob("*.part"))


def test_threshold_and_top_fraction_counts(gsm8k, top1, capsys):
    scored = gsm8k["root"] / "scored.jsonl"
    ref = gsm8k["scores"]
    rng = random.Random(gsm8k["seed"])
    # A threshold in the middle of a gap between reference scores, so float noise cannot move a row across it.
    values = sorted(set(ref.values()))
    gaps = [i for i in range(len(values) - 1) if values[i + 1] - values[i] > 1e-3 * values[i + 1]]
    i = rng.choice(gaps)
    t = (values[i] + values[i + 1]) / 2
    out = gsm8k["root"] / "thr.jsonl"
    assert select(scored, "-o", out, "--threshold", t) == 0  # a scored input: no model is loaded
    assert "already scored" in capsys.readouterr().err
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(k for k, v in ref.items() if v >= t)
    assert json.loads(out.with_name("thr.jsonl.summary.json").read_text())["max_rows_held"] == 0  # holds no row
    out = gsm8k["root"] / "top2.jsonl"
    assert select(scored, "-o", out, "--top-k", 2, "--group-key", "group", "--contiguous-groups") == 0
    summary = json.loads(out.with_name("top2.jsonl.summary.json").read_text())
    assert summary["kept"] == 2 * PROBLEMS and summary["max_rows_held"] == 2  # one group at a time
    f = rng.uniform(0.05, 0.95)
    out = gsm8k["root"] / "frac.jsonl"
    assert select(scored, "-o", out, "--top-fraction", f) == 0
    got = [r["id"] for r in read_jsonl(out)]
    n = 4 * PROBLEMS
    assert len(got) == math.floor(f * n)
    order = [r["id"] for r in gsm8k["rows"]]
    rows = read_jsonl(scored)
    want = sorted(range(n), key=lambda i: rank_key(rows[i]["score"], i), reverse=True)[: len(got)]
    assert got == [order[i] for i in sorted(want)]
    # Every kept row scores at least as well as every dropped one (by the reference scores, up to float noise).
    dropped = set(order) - set(got)
    assert min(ref[k] for k in got) >= max(ref[k] for k in dropped) * (1 - NEAR_TIE)


def test_resume_after_a_kill_gives_the_same_output(gsm8k, top1, tmp_path):
    out = tmp_path / "top1.jsonl"
    part = tmp_path / "top1.jsonl.scored.jsonl.part"
    cmd = [sys.executable, "-m", "edgeprm.cli", "select", str(gsm8k["root"] / "in.jsonl"), "-o", str(out),
           "--top-k", "1", "--group-key", "group", "--chunk-rows", "8", "-q"]
    written = kill_after(cmd, part, 16)
    assert 16 <= written < 4 * PROBLEMS and not out.exists()
    with part.open("a") as f:
        f.write('{"id": "torn", "problem": "x", "st')  # a kill mid-write
    assert select(gsm8k["root"] / "in.jsonl", "-o", out, "--top-k", 1, "--group-key", "group") == 2  # needs --resume
    assert select(gsm8k["root"] / "in.jsonl", "-o", out, "--top-k", 1, "--group-key", "group", "--resume") == 0
    summary = json.loads(out.with_name("top1.jsonl.summary.json").read_text())
    assert summary["resumed"] == written and summary["scored"] == 4 * PROBLEMS - written
    got, want = read_jsonl(out), read_jsonl(top1)
    assert len(got) == len(want) == PROBLEMS
    ref = gsm8k["scores"]
    for a, b in zip(got, want):
        if a["id"] != b["id"]:  # only a tie may pick differently (GSM8K repeats some solutions word for word)
            assert a["group"] == b["group"], (a["id"], b["id"])
            assert abs(ref[a["id"]] - ref[b["id"]]) <= NEAR_TIE * max(abs(ref[a["id"]]), 1e-6), (a["id"], b["id"])
            continue
        assert a["step_rewards"] == pytest.approx(b["step_rewards"], rel=NEAR_TIE, abs=1e-6)
    assert not part.exists() and not out.with_name("top1.jsonl.scored.jsonl").exists()


def test_parquet_in_and_out_round_trips(gsm8k, top1, tmp_path):
    scored = tmp_path / "scored.parquet"
    assert select(gsm8k["root"] / "scored.jsonl", "-o", scored, "--threshold=-inf") == 0  # JSONL -> Parquet
    assert pq.ParquetFile(scored).metadata.num_rows == 4 * PROBLEMS
    out = tmp_path / "top1.parquet"
    assert select(scored, "-o", out, "--top-k", 1, "--group-key", "group") == 0
    back = pq.read_table(out).to_pylist()
    assert back == read_jsonl(top1)  # every field and value survives JSONL -> Parquet -> Parquet


def test_bad_row_stops_with_its_line_and_resumes(tmp_path, checkpoints, capsys):
    rows = [{"id": f"r{i}", "problem": f"p{i // 2}", "steps": [f"{i} + 1", "done"]} for i in range(12)]
    rows[7]["steps"] = ["fine", ""]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(rows, src)
    model = checkpoints["step-classifier"]
    assert select(src, "-o", out, "--top-k", 1, "--model", model, "--chunk-rows", 3) == 2
    err = capsys.readouterr().err
    assert "in.jsonl line 8: step 1 is empty for id 'r7'" in err and "7 scored rows are kept" in err
    rows[7]["steps"] = ["fixed", "done"]
    write_jsonl(rows, src)
    assert select(src, "-o", out, "--top-k", 1, "--model", model, "--resume") == 0
    assert len(read_jsonl(out)) == 6 and "7 kept from an earlier run" in capsys.readouterr().err
