"""The tiny checkpoints are in the real layouts: each is detected as its family and holds what the family reads."""

import json

import pytest

from edgeprm.families import detect_family
from edgeprm.loading import SafetensorsCheckpoint, read_config
from edgeprm.testing import BUILDERS, build_step_classifier


@pytest.mark.parametrize("family", list(BUILDERS))
def test_each_builder_writes_its_family_layout(checkpoints, family):
    path = checkpoints[family]
    config, weights = read_config(path), SafetensorsCheckpoint(path)
    assert str(detect_family(path, config, weights)) == family
    assert config["model_type"] == "qwen2" and any(k.startswith("model.layers.1.") for k in weights.keys())
    assert (path / "tokenizer.json").is_file() and json.loads((path / "tokenizer_config.json").read_text())[
        "chat_template"]
    head_keys = set(detect_family(path, config, weights).head_tensor_keys(config, weights))
    assert head_keys <= set(weights.keys())
    assert (path / "reward_head.pt").is_file() == (family == "value-head")


def test_sharded_builds_are_indexed_and_seeded(tmp_path):
    a = build_step_classifier(tmp_path / "a", seed=7, shards=2)
    index = json.loads((a / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors"]
    b = build_step_classifier(tmp_path / "b", seed=7, shards=2)
    for f in index["weight_map"].values():
        assert (a / f).read_bytes() == (b / f).read_bytes()
