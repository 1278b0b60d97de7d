"""The bundled demo PRM: shipped in the real layout, the default model, good on held-out data; `edgeprm demo`."""

import json
import random
from pathlib import Path

import edgeprm
from edgeprm.cli import main
from edgeprm.demo import EXAMPLES, example_rows, read_examples
from edgeprm.demo_eval import HELDOUT_SEED, check_bars, evaluate
from edgeprm.scorer import default_model_dir

DEMO = Path(edgeprm.__file__).parent / "assets" / "demo-prm"


def test_demo_prm_is_shipped_small_and_is_the_default():
    files = {p.name: p.stat().st_size for p in DEMO.iterdir()}
    shipped = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training.json"}
    assert shipped <= set(files)
    assert sum(files.values()) <= 20e6, files
    assert default_model_dir() == DEMO
    config = json.loads((DEMO / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForProcessRewardModel"]
    training = json.loads((DEMO / "training.json").read_text())
    assert training["train_seconds"] <= 30 * 60


def test_demo_prm_meets_the_bars_on_the_heldout_set():
    """The issue's bars on the held-out set (500 problems x 4 of a data seed never trained on; training uses seeds
    >= 1e6), scored through edgeprm.load like any user would: step AUROC >= 0.95, first error found exactly in >= 85%
    of wrong solutions, Best-of-4 >= majority vote + 10 points and >= random pick + 20 points."""
    f = evaluate(DEMO, n_problems=500, seed=HELDOUT_SEED)
    assert check_bars(f) == [], f
    recorded = json.loads((DEMO / "training.json").read_text())["heldout"]
    for key in ("step_auroc", "first_error_exact", "bon_prm_min"):  # training.json reports what the model does
        assert abs(f[key] - recorded[key]) < 5e-3, (key, f[key], recorded[key])


def test_demo_prm_generalises_to_a_fresh_seed():
    """Any other unseen seed, 300 problems: the same bars. The shipped model clears them by more than the sampling
    noise of 300 problems (about 1.5 points on first-error exact)."""
    seed = random.randrange(10_000, 900_000)
    f = evaluate(DEMO, n_problems=300, seed=seed)
    assert check_bars(f) == [], (seed, f)


def test_bundled_examples_are_reproducible_and_labelled():
    rows = read_examples(EXAMPLES)
    assert rows == example_rows()
    assert any(r["is_correct"] for r in rows) and not all(r["is_correct"] for r in rows)


def test_demo_command_prints_steps_picks_and_best_of_n(tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert main(["demo", "--problems", "40", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = read_examples(EXAMPLES)
    assert out.count("<- PRM's pick") == len({r["problem_id"] for r in rows})
    assert "first step the PRM doubts" in out
    for word in ("PRM pick", "majority vote", "random pick"):
        assert word in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_a_bad_examples_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "steps": ["a"]}\nnot json\n')
    assert main(["demo", "--examples", str(bad), "--problems", "0"]) == 2
    assert "line 2" in capsys.readouterr().err
