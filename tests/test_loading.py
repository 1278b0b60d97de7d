"""Reading checkpoints: sharded safetensors, missing tensors, bad config.json, hub ids offline."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

import edgeprm
from edgeprm.families import Family
from edgeprm.testing import build_step_classifier

from .helpers import copy


def test_sharded_checkpoint_loads_the_same(tmp_path, scorers, checkpoints):
    sharded = build_step_classifier(tmp_path / "sharded", seed=0, shards=3)
    assert (sharded / "model.safetensors.index.json").is_file()
    one = edgeprm.load(checkpoints["step-classifier"], device="cpu").score("What is 1+1?", ["1+1 = 2", "so 2"])
    three = edgeprm.load(sharded, device="cpu").score("What is 1+1?", ["1+1 = 2", "so 2"])
    assert one.step_rewards == pytest.approx(three.step_rewards, abs=1e-6)


def test_missing_backbone_tensor(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "nolayer")
    sd = load_file(d / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, d / "model.safetensors")
    with pytest.raises(ValueError, match=r"backbone tensor 'model.layers.1.mlp.up_proj.weight' is missing"):
        edgeprm.load(d)


def test_offline_hub_id_that_is_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache, and HF_HUB_OFFLINE is set"):
        edgeprm.load("edgeprm-test/no-such-prm")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        edgeprm.load(str(tmp_path / "no" / "such" / "dir"))


def test_hub_cache_layout_loads_offline(monkeypatch, tmp_path, checkpoints):
    """A hub id resolves through the local cache exactly like a download would."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--edgeprm-test--tiny-prm"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(checkpoints["value-head"], snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    s = edgeprm.load("edgeprm-test/tiny-prm", device="cpu")
    assert s.family is Family.VALUE_HEAD


def test_config_json_must_parse(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        edgeprm.load(d)
    cfg = json.loads((tmp_path / "badjson" / "tokenizer_config.json").read_text())
    assert cfg["chat_template"]
