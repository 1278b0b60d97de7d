"""The checkpoint's tokenizer read without transformers: ids, offsets and chat templates equal transformers' own."""

import random

import pytest
from transformers import AutoTokenizer

from edgeprm.tokenizer import PRMTokenizer


@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_ids_and_chat_template_equal_transformers(checkpoints, family):
    path = checkpoints[family]
    ours, hf = PRMTokenizer.from_dir(path), AutoTokenizer.from_pretrained(path)
    rng = random.Random()
    words = "the total is <extra_0> apples ки 12 + 7 = 19 \\boxed{x} <|im_end|> naïve".split()
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
    ids, offsets = ours.encode(text)
    assert ids == hf(text)["input_ids"] and len(offsets) == len(ids)
    messages = [{"role": "system", "content": "be exact"}, {"role": "user", "content": text},
                {"role": "assistant", "content": text[::-1]}]
    for gen in (False, True):
        assert ours.apply_chat_template(messages, add_generation_prompt=gen) == hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=gen)
    assert ours.pad_token_id == hf.pad_token_id and len(ours) == len(hf)


def test_missing_tokenizer_and_template_are_explained(tmp_path, checkpoints):
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        PRMTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_bytes((checkpoints["value-head"] / "tokenizer.json").read_bytes())
    with pytest.raises(ValueError, match="the tokenizer has no chat template"):
        PRMTokenizer.from_dir(tmp_path).apply_chat_template([{"role": "user", "content": "x"}])
