"""Held-out figures, and the shipped demo PRM held to its bars."""

import json
import random
from pathlib import Path

import pytest

import edgeprm
from edgeprm.demo.evaluate import DEMO_BARS as BARS
from edgeprm.demo.evaluate import HELDOUT_SEED, VALIDATION_SEED, check_bars, evaluate, figures, first_flagged
from edgeprm.loading import default_model_dir

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


def test_heldout_seeds_are_never_training_seeds():
    from edgeprm.demo.train import TRAIN_SEED_BASE

    assert max(HELDOUT_SEED, VALIDATION_SEED) < TRAIN_SEED_BASE


def test_figures_of_an_oracle_and_of_a_blind_scorer(records):
    oracle = [[0.9 if lab else 0.1 for lab in r["step_labels"]] for r in records]
    f = figures(records, oracle)
    assert f["step_auroc"] == 1.0 and f["first_error_exact"] == 1.0
    assert f["correct_solution_false_alarm"] == 0.0
    assert f["bon_prm_min"] == pytest.approx(f["bon_oracle"])
    assert check_bars(f) == []
    blind = figures(records, [[0.7] * len(r["steps"]) for r in records])
    assert blind["step_auroc"] == 0.5 and blind["first_error_exact"] == 0.0
    assert len(check_bars(blind)) == len(BARS)
    assert first_flagged([0.9, 0.4, 0.2]) == 1 and first_flagged([0.9]) is None
    with pytest.raises(ValueError, match="rewards"):
        figures(records[:1], [[0.5]])
