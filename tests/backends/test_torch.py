"""The torch backend: what it loads and keeps, and the forward it runs."""

import pytest
import torch


def test_step_classifier_does_not_keep_lm_head(scorers):
    names = [n for n, _ in scorers["step-classifier"].backbone.named_parameters()]
    assert names and not any("lm_head" in n or n.startswith("score") for n in names)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_hidden_states_equal_the_masked_forward_at_every_real_token(scorers, side):
    """Right-padded batches run without a mask (causal attention alone keeps pads out of real tokens): every real
    token's state equals the transformers forward with the padding mask, and each row's state run alone."""
    s = scorers["value-head"]
    lengths = torch.randint(3, 40, (5,)).tolist()
    lengths[0] = 40  # one row without pads
    t = max(lengths)
    vocab = s.backbone.config.vocab_size
    ids = torch.randint(0, vocab, (len(lengths), t))
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        if side == "right":
            mask[r, :n] = 1
        else:
            mask[r, t - n :] = 1
    got = s.hidden_states(ids, mask)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        want = s.backbone(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        for r in range(len(lengths)):
            real = mask[r].bool()
            torch.testing.assert_close(got[r, real], want[r, real], atol=1e-5, rtol=1e-5)
            alone = s.backbone(input_ids=ids[r : r + 1, real]).last_hidden_state[0]
            torch.testing.assert_close(got[r, real], alone, atol=1e-5, rtol=1e-5)
