"""The synthetic arithmetic generator, the held-out figures, and the demo PRM's training layout."""

import itertools
import random

import numpy as np
import pytest

from edgeprm.demo_eval import BARS, HELDOUT_SEED, VALIDATION_SEED, auroc, check_bars, figures, first_flagged
from edgeprm.synthetic import ERROR_KINDS, SLIPS, ErrorMix, generate, group_by_problem, parse_expressions

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


def holds(expr) -> bool:
    a, op, b, c = expr
    return OPS[op](a, b) == c


@pytest.fixture(scope="module")
def records():
    return generate(300, seed=random.randrange(10**6))


def test_same_seed_same_records_other_seed_other_records():
    seed = random.randrange(10**6)
    assert generate(20, seed=seed) == generate(20, seed=seed)
    assert generate(20, seed=seed) != generate(20, seed=seed + 1)


def test_shape_and_labels(records):
    groups = group_by_problem(records)
    assert len(groups) == 300 and all(len(g) == 4 for g in groups)
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        n = len(r["steps"])
        assert len(r["step_labels"]) == n >= 3
        if r["is_correct"]:
            assert r["first_error"] is None and r["error_kind"] is None and r["error_char"] is None
            assert r["step_labels"] == [1] * n and r["answer"] == r["gold_answer"]
        else:
            k = r["first_error"]
            assert 0 <= k < n and r["error_kind"] in ERROR_KINDS and r["answer"] != r["gold_answer"]
            # PRM800K / ProcessBench convention: every step from the first error on is bad.
            assert r["step_labels"] == [1] * k + [0] * (n - k)
            assert 0 <= r["error_char"] <= len(r["steps"][k])
        assert str(r["answer"]) in r["steps"][-1]


def test_arithmetic_of_every_step(records):
    for r in records:
        exprs = [parse_expressions(s) for s in r["steps"][:-1]]
        assert all(len(e) == 1 for e in exprs), r["steps"]
        exprs = [e[0] for e in exprs]
        wrong_result = r["error_kind"] == "result"
        for i, e in enumerate(exprs):
            # Only a `result` error writes a false equation; the other kinds compute correctly from a wrong input.
            assert holds(e) != (wrong_result and i == r["first_error"]), (r["id"], r["steps"])
        if r["is_correct"] or r["first_error"] < len(exprs):
            assert exprs[-1][3] == r["answer"]


def test_error_mix_and_best_of_n_is_measurable(records):
    wrong = [r for r in records if not r["is_correct"]]
    kinds = {k: sum(r["error_kind"] == k for r in wrong) for k in ERROR_KINDS}
    assert all(c > 0.15 * len(wrong) for c in kinds.values()), kinds
    assert 0.3 < 1 - len(wrong) / len(records) < 0.6
    groups = group_by_problem(records)
    mixed = sum(any(r["is_correct"] for r in g) and not all(r["is_correct"] for r in g) for g in groups)
    assert mixed > 0.6 * len(groups)
    # Wrong candidates often share the same wrong answer, so majority voting is not an oracle.
    shared = sum(len({r["answer"] for r in g if not r["is_correct"]}) < sum(not r["is_correct"] for r in g)
                 for g in groups)
    assert shared > 0.2 * len(groups)


def slips_in(records) -> list[int]:
    """How far the wrong result of each `result` error in a + or - step is from the true one (x * y steps may slip
    by a whole group instead), leaving out digit swaps (9 or more)."""
    out = []
    for r in records:
        if r["error_kind"] == "result":
            a, op, b, c = parse_expressions(r["steps"][r["first_error"]])[0]
            if op in "+-" and abs(c - OPS[op](a, b)) < 9:
                out.append(c - OPS[op](a, b))
    return out


def test_training_error_mix_shifts_kinds_and_slips_and_the_default_is_the_evaluation_mix(records):
    seed = random.randrange(10**6)
    assert generate(50, seed=seed, errors=ErrorMix()) == generate(50, seed=seed)
    mix = ErrorMix(kinds=(3.0, 1.0, 1.0), slips=(2, -2, 4, -4))
    shifted = [r for r in generate(300, seed=seed, errors=mix) if not r["is_correct"]]
    share = sum(r["error_kind"] == "result" for r in shifted) / len(shifted)
    assert 0.45 < share < 0.75, share  # 3/5 of the draws (some draws are invalid for a chain and redrawn)
    assert set(slips_in(shifted)) == {2, -2, 4, -4}
    assert set(slips_in(records)) == set(SLIPS)
    with pytest.raises(ValueError, match="kinds"):
        generate(1, errors=ErrorMix(kinds=(0.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match="last digit"):
        generate(1, errors=ErrorMix(slips=(10, -20)))


def test_heldout_seeds_are_never_training_seeds():
    from edgeprm.train_demo import TRAIN_SEED_BASE

    assert max(HELDOUT_SEED, VALIDATION_SEED) < TRAIN_SEED_BASE


def test_auroc_equals_pairwise_definition_with_ties():
    rng = np.random.default_rng()
    scores = rng.integers(0, 6, 60).astype(float)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)])
    assert auroc(scores, labels) == pytest.approx(brute, abs=1e-12)
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


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


def test_training_writes_the_real_step_classifier_layout_and_edgeprm_scores_it_as_trained(tmp_path):
    """A few training steps of a tiny config; the checkpoint loads through edgeprm.load and its rewards equal the
    training model's own forward on the reference input (so the shipped model is scored as it was trained)."""
    import json

    from safetensors import safe_open

    import edgeprm
    from edgeprm.train_demo import DemoConfig, DemoPRM, predict, train

    cfg = DemoConfig(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64, vocab=700, batch_tokens=1024,
                     chunk_problems=16, bf16=False, lm_layer=1)
    info = train(tmp_path, minutes=0, seed=random.randrange(100), steps=4, threads=1, cfg=cfg, eval_problems=0,
                 log=lambda *a: None)
    assert info["steps"] == 4
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForProcessRewardModel"] and config["model_type"] == "qwen2"
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= keys
    assert any(k.startswith("model.layers.1.") for k in keys) and "model.embed_tokens.weight" in keys
    assert json.loads((tmp_path / "training.json").read_text())["steps"] == 4

    scorer = edgeprm.load(tmp_path, device="cpu", dtype="float32")
    assert scorer.family == "step-classifier"
    for number in ("7", "23", "456", "9081"):  # digits are split one per token
        ids, _ = scorer.encoder.tokenizer.encode(number)
        assert len(ids) == len(number)

    records = generate(3, seed=random.randrange(10**5))
    model = DemoPRM(config, cfg.lm_layer)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in keys})
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    want = predict(model, hf_tok, records, hf_tok.convert_tokens_to_ids("<extra_0>"), hf_tok.pad_token_id)
    got = [r.step_rewards for r in scorer.score_batch(records)]
    for w, g in zip(want, got):
        assert np.allclose(w, g, atol=1e-5), (w, g)
