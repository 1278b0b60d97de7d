"""Training the demo PRM: the real step-classifier layout, scored by edgeprm as it was trained."""

import json
import random

import numpy as np

import edgeprm
from edgeprm.demo.synthetic import generate


def test_training_writes_the_real_step_classifier_layout_and_edgeprm_scores_it_as_trained(tmp_path):
    """A few training steps of a tiny config; the checkpoint loads through edgeprm.load and its rewards equal the
    training model's own forward on the reference input (so the shipped model is scored as it was trained)."""

    from safetensors import safe_open

    from edgeprm.demo.train import DemoConfig, DemoPRM, predict, train

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
