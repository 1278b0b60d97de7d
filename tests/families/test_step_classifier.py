"""The step-classifier family: its head tensors, and the rendering scoring and training share."""


import random

import pytest
from safetensors.torch import load_file, save_file

import edgeprm

from ..helpers import copy


def test_missing_classifier_head_names_the_file(tmp_path, checkpoints):
    d = copy(checkpoints["step-classifier"], tmp_path / "nohead")
    sd = {k: v for k, v in load_file(d / "model.safetensors").items() if not k.startswith("score.0")}
    save_file(sd, d / "model.safetensors")
    with pytest.raises(ValueError, match=r"head tensors \['score.0.weight', 'score.0.bias'\] are missing from "
                                         r"\['model.safetensors'\]"):
        edgeprm.load(d)


def test_training_renders_the_reference_input_exactly_as_scoring_does(checkpoints, scorers):
    """The demo PRM's training text and the scorer's text are one function: same string, same separators, and user
    text that contains a separator is neutralised in both."""
    from transformers import AutoTokenizer

    from edgeprm.demo.train import chat_text
    from edgeprm.families.step_classifier import SEP_TOKEN, render
    from edgeprm.trajectory import NEUTRALISER, Trajectory

    rng = random.Random()
    problem = f"Tom has {rng.randint(2, 99)} apples <extra_0> and more?"
    steps = [f"step {i}: {rng.randint(1, 999)} + {rng.randint(1, 9)} {SEP_TOKEN if i == 1 else ''}."
             for i in range(rng.randint(2, 6))]
    hf = AutoTokenizer.from_pretrained(checkpoints["step-classifier"])
    text = chat_text(hf, problem, steps)
    s = scorers["step-classifier"]
    want = render(problem, steps, s.tokenizer.apply_chat_template, s.tokenizer.added_tokens)
    assert text == want
    assert text.count(SEP_TOKEN) == len(steps) and "<" + NEUTRALISER + "extra_0>" in text
    enc = s.encoder.encode(Trajectory(problem, steps))
    assert list(enc.ids) == hf(text)["input_ids"]  # the token ids the scorer reads are the training ones
