"""ProcessBench: the official metric on hand-made predictions, the reader (shared files when present), the sweep."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from edgeprm.eval.processbench import (
    SPLITS,
    ProcessBenchRow,
    average_f1,
    f1_curve,
    first_error,
    predict,
    read_processbench,
    read_split,
    score_split,
    threshold_sweep,
)

PROCESSBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "processbench"


def pb_rows(labels, n_steps=4, split="gsm8k"):
    return [ProcessBenchRow(f"{split}-{i}", split, f"problem {i}", tuple(f"step {j}" for j in range(n_steps)), lab)
            for i, lab in enumerate(labels)]


def test_metric_on_hand_made_predictions_with_known_f1():
    rows = pb_rows([1, 0, 2, 1, -1, -1, -1, -1])
    r = score_split(rows, [1, 0, -1, 2, -1, -1, -1, 0])  # erroneous: 2 of 4 right; correct: 3 of 4
    assert (r.n, r.n_erroneous, r.n_correct) == (8, 4, 4)
    assert r.error_accuracy == 50.0 and r.correct_accuracy == 75.0 and r.f1 == pytest.approx(60.0)
    perfect = score_split(rows, [1, 0, 2, 1, -1, -1, -1, -1])
    assert perfect.f1 == 100.0
    all_wrong = score_split(rows, [0, 1, 1, -1, 3, 0, 2, 1])
    assert all_wrong.error_accuracy == all_wrong.correct_accuracy == all_wrong.f1 == 0.0
    assert average_f1([r, perfect]) == pytest.approx(80.0)


def test_a_split_without_erroneous_or_correct_rows_has_no_f1():
    all_correct = score_split(pb_rows([-1, -1, -1]), [-1, 2, -1])
    assert all_correct.n_erroneous == 0 and all_correct.error_accuracy is None and all_correct.f1 is None
    assert all_correct.correct_accuracy == pytest.approx(200 / 3)
    all_erroneous = score_split(pb_rows([0, 3]), [0, 3])
    assert all_erroneous.error_accuracy == 100.0 and all_erroneous.correct_accuracy is None
    assert average_f1([all_correct, score_split(pb_rows([0, -1]), [0, -1])]) is None  # never counted as 0


def test_first_error_is_the_first_step_below_the_threshold():
    assert first_error([0.9, 0.5, 0.49, 0.1]) == 2  # a reward equal to the threshold is not an error
    assert first_error([0.9, 0.8]) == -1
    assert first_error([0.9, None, None], 0.95) == 0 and first_error([0.9, None], 0.5) == -1  # cut steps skipped
    assert predict(pb_rows([-1, 0], n_steps=2), [[0.9, 0.2], [0.1, 0.9]]) == [1, 0]


def test_errors_name_the_row():
    rows = pb_rows([1, -1], n_steps=3)
    with pytest.raises(ValueError, match=r"row 'gsm8k-1' \(gsm8k\): 2 step rewards for 3 steps"):
        predict(rows, [[0.9, 0.9, 0.9], [0.9, 0.9]])
    with pytest.raises(ValueError, match=r"row 'gsm8k-0': label 3 is outside its 3 steps \(expected -1 for an "
                                         r"all-correct solution, or the first wrong step's index 0..2\)"):
        score_split(pb_rows([3, -1], n_steps=3), [0, -1])
    with pytest.raises(ValueError, match=r"row 'gsm8k-1': prediction 3 is outside its 3 steps"):
        score_split(rows, [1, 3])
    with pytest.raises(ValueError, match="need one prediction per row; got 1 for 2 rows"):
        score_split(rows, [1])


def write_split(path, records):
    path.write_text(json.dumps(records))
    return path


def record(i, label=-1, steps=("a", "b", "c")):
    return {"id": f"x-{i}", "generator": "g", "problem": f"p{i}", "steps": list(steps),
            "final_answer_correct": label == -1, "label": label}


def test_reader_checks_each_row_and_names_file_and_row(tmp_path):
    good = write_split(tmp_path / "math.json", [record(0), record(1, 2)])
    rows = read_split(good)
    assert [(r.split, r.id, r.label, len(r.steps)) for r in rows] == [("math", "x-0", -1, 3), ("math", "x-1", 2, 3)]
    assert rows[1].key == "math/x-1" and rows[1].final_answer_correct is False
    jsonl = tmp_path / "gsm8k.jsonl"
    jsonl.write_text("\n".join(json.dumps(record(i)) for i in range(3)) + "\n")
    assert [r.split for r in read_split(jsonl)] == ["gsm8k"] * 3
    cases = [
        ([record(0), record(1, 3)], r"bad.json row 1: row 'x-1': label 3 is outside its 3 steps"),
        ([record(0), {**record(1), "label": "2"}], r"bad.json row 1: row 'x-1': 'label' must be an integer"),
        ([{k: v for k, v in record(0).items() if k != "steps"}], r"bad.json row 0: row 'x-0' lacks 'steps'"),
        ([{**record(0), "steps": []}], r"row 'x-0': 'steps' must be a non-empty list"),
        ([record(0), record(0)], r"id 'x-0' occurs more than once"),
    ]
    for records, message in cases:
        with pytest.raises(ValueError, match=message):
            read_split(write_split(tmp_path / "bad.json", records))
    (tmp_path / "torn.json").write_text('[{"id": 1,')
    with pytest.raises(ValueError, match="torn.json is not valid JSON"):
        read_split(tmp_path / "torn.json")


def test_reader_of_a_directory_a_file_and_the_hub(tmp_path):
    write_split(tmp_path / "gsm8k.json", [record(0), record(1, 0)])
    write_split(tmp_path / "omnimath.json", [record(0, 1)])
    by_split, absent = read_processbench(tmp_path, "all")
    assert list(by_split) == ["gsm8k", "omnimath"] and absent == ["math", "olympiadbench"]
    assert list(read_processbench(tmp_path, "omnimath")[0]) == ["omnimath"]
    assert list(read_processbench(tmp_path / "gsm8k.json")[0]) == ["gsm8k"]
    with pytest.raises(ValueError, match="holds split 'gsm8k', not 'math'; pass --split all or gsm8k"):
        read_processbench(tmp_path / "gsm8k.json", "math")
    with pytest.raises(FileNotFoundError, match="no ProcessBench split of \\('math',\\)"):
        read_processbench(tmp_path, "math")
    with pytest.raises(ValueError, match="split must be one of"):
        read_processbench(tmp_path, "mmlu")
    with pytest.raises(ValueError, match=r"from the hub dataset Qwen/ProcessBench .*pass --data PATH"):
        read_processbench(None, "gsm8k")  # the tests run with HF_HUB_OFFLINE=1 and an empty hub cache


@pytest.mark.skipif(not (PROCESSBENCH / "gsm8k.json").is_file(), reason=f"ProcessBench data not at {PROCESSBENCH}")
def test_reader_on_the_shared_official_splits():
    by_split, absent = read_processbench(PROCESSBENCH, "all")
    assert list(by_split) == ["gsm8k", "math"] and absent == ["olympiadbench", "omnimath"]
    # The counts the data's README gives.
    for split, (n, erroneous, lo, hi) in {"gsm8k": (400, 207, 2, 16), "math": (1000, 594, 2, 32)}.items():
        rows = by_split[split]
        assert len(rows) == n and sum(r.label >= 0 for r in rows) == erroneous
        assert min(len(r.steps) for r in rows) == lo and max(len(r.steps) for r in rows) == hi
        assert all(r.label < len(r.steps) for r in rows) and len({r.key for r in rows}) == n
        assert all(r.final_answer_correct is not None for r in rows)
        # Every all-correct solution has a correct final answer (an erroneous one may still reach it).
        assert all(r.final_answer_correct for r in rows if r.label == -1)
    assert set(by_split) <= set(SPLITS)


def random_split(rng: random.Random, n: int, split: str = "s"):
    rows, rewards = [], []
    for i in range(n):
        k = rng.randint(1, 7)
        label = [-1, 0][i] if i < 2 else rng.choice([-1, -1, *range(k)])  # both subsets are never empty
        rows.append(ProcessBenchRow(f"{split}{i}", split, "p", tuple("s" * (j + 1) for j in range(k)), label))
        rw = [round(rng.random(), 2) for _ in range(k)]  # rounding makes ties between rows, as real models have
        if rng.random() < 0.1:
            cut = rng.randint(1, k)
            rw = rw[:cut] + [None] * (k - cut)
        rewards.append(rw)
    return rows, rewards


def direct_f1(rows, rewards, t):
    return score_split(rows, predict(rows, rewards, t)).f1


def test_threshold_sweep_matches_a_brute_force_search():
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    data = {name: random_split(rng, rng.randint(20, 60), name) for name in ("a", "b")}
    fine = np.linspace(0, 1.001, 2003)
    brute = {name: np.array([direct_f1(rows, rw, t) for t in fine]) for name, (rows, rw) in data.items()}
    for name, (rows, rw) in data.items():  # the vectorised curve is the metric, threshold by threshold
        curve = f1_curve(rows, rw, fine)[2]
        assert np.allclose(curve, brute[name]), f"seed {seed}"
    sweep = {s.split: s for s in threshold_sweep(data)}
    assert list(sweep) == ["a", "b", "average"]
    for name in data:
        s = sweep[name]
        assert s.f1 == pytest.approx(brute[name].max()) or s.f1 > brute[name].max(), f"seed {seed}"
        rows, rw = data[name]
        assert direct_f1(rows, rw, s.threshold) == pytest.approx(s.f1), f"seed {seed}"
        assert s.low <= s.threshold <= s.high
        assert s.grid[9][0] == 0.5 and s.grid[9][1] == pytest.approx(direct_f1(rows, rw, 0.5))
    avg = sweep["average"]
    assert avg.f1 >= (brute["a"] + brute["b"]).max() / 2 - 1e-9, f"seed {seed}"
    assert avg.f1 == pytest.approx(np.mean([direct_f1(rows, rw, avg.threshold) for rows, rw in data.values()]))


def test_sweep_finds_the_separating_threshold():
    rows = pb_rows([1, -1, 0, -1], n_steps=2)
    rewards = [[0.9, 0.3], [0.8, 0.7], [0.2, 0.9], [0.75, 0.95]]  # any threshold in (0.3, 0.7] is perfect
    (s,) = threshold_sweep({"gsm8k": (rows, rewards)})
    assert s.f1 == 100.0 and 0.3 < s.low <= s.high <= 0.7 and 0.3 < s.threshold <= 0.7
    assert direct_f1(rows, rewards, 0.5) == 100.0 and direct_f1(rows, rewards, 0.72) < 100.0
