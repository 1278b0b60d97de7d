"""The outlier stress model keeps the demo PRM's fp32 rewards and puts k-times activations on the chosen channels."""

import json
from pathlib import Path

import pytest
import torch

import edgeprm
from edgeprm.testing.outliers import add_activation_outliers

DEMO = Path(edgeprm.__file__).parent / "assets" / "demo-prm"


@pytest.fixture(scope="module")
def rows():
    from edgeprm.demo.synthetic import generate

    return generate(3, seed=int(torch.randint(1 << 30, ())))


def rewards(model, rows):
    scorer = edgeprm.load(model, device="cpu", dtype="float32", truncate=True)
    return [x.step_rewards + [x.score] for x in scorer.score_batch(rows)]


def projection_inputs(model, rows):
    """name -> the activations entering each projection group, over the tokens of `rows`."""
    scorer = edgeprm.load(model, device="cpu", dtype="float32", truncate=True)
    seen, hooks = {}, []

    def keep(key, output_side):
        def hook(module, args, output):
            x = output if output_side else args[0]
            seen.setdefault(key, []).append(x.detach().reshape(-1, x.shape[-1]).clone())
        return hook

    for i, layer in enumerate(scorer.backbone.layers):
        for name, module, output_side in (("input_layernorm", layer.input_layernorm, True),
                                          ("post_attention_layernorm", layer.post_attention_layernorm, True),
                                          ("mlp.down_proj", layer.mlp.down_proj, False)):
            hooks.append(module.register_forward_hook(keep(f"layers.{i}.{name}", output_side)))
    scorer.score_batch(rows)
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in seen.items()}


# A power-of-two factor leaves the rewards bit-identical: tests/quant/test_fidelity.py holds that on 100 problems.
def test_any_factor_leaves_fp32_rewards_within_rounding(rows, tmp_path):
    stressed = add_activation_outliers(DEMO, tmp_path / "stress", factor=20, seed=5)
    worst = max(abs(a - b) for x, y in zip(rewards(stressed, rows), rewards(DEMO, rows)) for a, b in zip(x, y))
    assert worst <= 1e-5, worst


def test_the_chosen_channels_carry_factor_times_the_activations(rows, tmp_path):
    factor = 64
    stressed = add_activation_outliers(DEMO, tmp_path / "stress", factor=factor, channels=4, seed=7)
    chosen = json.loads((stressed / "outliers.json").read_text())["channels"]
    plain, hot = projection_inputs(DEMO, rows), projection_inputs(stressed, rows)
    assert set(plain) == set(hot) and len(plain) == 3 * len(edgeprm.load(DEMO).backbone.layers)
    prefix = "model." if any(k.startswith("model.") for k in chosen) else ""
    for key in plain:
        c = torch.tensor(chosen[prefix + key])
        assert len(c) == 4
        others = torch.ones(plain[key].shape[-1], dtype=torch.bool)
        others[c] = False
        # the chosen channels are scaled by the factor, every other channel is the same activation as before
        torch.testing.assert_close(hot[key][:, c], plain[key][:, c] * factor, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hot[key][:, others], plain[key][:, others], rtol=1e-4, atol=1e-5)
        # and they are outliers: the chosen channels peak well above the typical channel (a chosen channel of
        # down_proj's input can be one that SiLU(gate) keeps small, so the median of the four is held)
        peak = hot[key].abs().amax(0)
        assert peak[c].median() > 8 * peak[others].median(), (key, peak[c], peak[others].median())
