"""ScorerConfig: every option checked before any file is read; options a backend lacks are named."""


import pytest

import edgeprm


def test_bad_options_are_rejected(checkpoints):
    with pytest.raises(ValueError, match=r"quantization must be one of \(None, 'int8', 'int4'\)"):
        edgeprm.load(checkpoints["value-head"], quantization="int3")
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        edgeprm.load(checkpoints["value-head"], dtype="float8")
    with pytest.raises(ValueError, match=r"aggregation must be one of"):
        edgeprm.load(checkpoints["value-head"], aggregation="median")


def test_config_is_frozen_validated_and_names_every_bad_option():
    from dataclasses import FrozenInstanceError

    from edgeprm.config import ScorerConfig

    cfg = ScorerConfig()
    with pytest.raises(FrozenInstanceError):
        cfg.alpha = 2.0
    with pytest.raises(ValueError, match=r"token_budget and max_batch_size must be positive; got 0, 32"):
        cfg.replace(token_budget=0)
    with pytest.raises(ValueError, match=r"padding_side must be one of \('left', 'right'\); got 'top'"):
        ScorerConfig(padding_side="top")
    with pytest.raises(ValueError, match=r"device must be one of \('auto', 'cpu', 'cuda'\) \(or 'cuda:N'\)"):
        ScorerConfig(device="tpu")
    with pytest.raises(ValueError, match="alpha must be a finite number; got nan"):
        ScorerConfig(alpha=float("nan"))
    with pytest.raises(ValueError, match="max_length must be positive; got 0"):
        ScorerConfig(max_length=0)
    with pytest.raises(ValueError, match=r"the step separator \(split\) must be a non-empty string"):
        ScorerConfig(split="")
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'onnx'\); got 'tflite'"):
        ScorerConfig(backend="tflite")
    assert ScorerConfig(device="cuda:1").device == "cuda:1" and ScorerConfig(family="value-head").family == "value-head"


def test_unknown_and_backend_only_options_are_errors_that_name_them(checkpoints):
    from edgeprm.config import ScorerConfig

    with pytest.raises(ValueError, match=r"unknown option 'tokens_budget'; edgeprm.load takes .*token_budget"):
        edgeprm.load(checkpoints["value-head"], tokens_budget=100)
    with pytest.raises(ValueError, match=r"threads=2 is an option of the onnx backend, not of backend='torch'"):
        edgeprm.load(checkpoints["value-head"], threads=2)
    with pytest.raises(ValueError, match=r"dtype='bfloat16' is an option of the torch backend, not of backend='onnx'"):
        ScorerConfig(backend="onnx", dtype="bfloat16")
    with pytest.raises(ValueError, match=r"revision='main' is an option of the torch backend"):
        ScorerConfig(backend="onnx", revision="main")
    with pytest.raises(ValueError, match=r"quantization must be None or one of \('none', 'int8', 'int4'\)"):
        ScorerConfig(backend="onnx", quantization="nf4")
    # A family's own options are an error for a model of another family (they would be silently ignored).
    with pytest.raises(ValueError, match=r"step_tag is an option of token-prob PRMs; this model is a value-head PRM"):
        edgeprm.load(checkpoints["value-head"], step_tag=" ки")


def test_the_scorer_reports_the_config_in_effect(checkpoints):
    import torch

    from edgeprm.config import ScorerConfig

    s = edgeprm.load(checkpoints["value-head"], device="cpu", dtype=torch.float32, alpha=1.5)
    assert s.config.family == "value-head" and s.config.aggregation == "reasonflux"  # resolved by the family
    assert s.config.max_length == 2048 and s.config.dtype == "float32" and s.config.alpha == 1.5
    base = ScorerConfig(device="cpu", aggregation="mean", token_budget=512)
    t = edgeprm.load(checkpoints["value-head"], config=base, max_length=100)  # keywords override the config
    assert (t.aggregation, t.token_budget, t.max_length) == ("mean", 512, 100)
    t.token_budget = 2048  # a live scorer's batching may change; the config stays validated
    assert t.config.token_budget == 2048
    with pytest.raises(ValueError, match="token_budget and max_batch_size must be positive"):
        t.token_budget = -1
