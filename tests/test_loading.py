import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import edgeprm
from edgeprm.fixtures import build_step_classifier
from edgeprm.loading import Family
from edgeprm.trajectory import Trajectory, split_steps


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_family_is_detected_from_the_files(scorers, family):
    assert scorers[family].family is Family(family)


def test_step_classifier_does_not_keep_lm_head(scorers):
    names = [n for n, _ in scorers["step-classifier"].backbone.named_parameters()]
    assert names and not any("lm_head" in n or n.startswith("score") for n in names)


def test_sharded_checkpoint_loads_the_same(tmp_path, scorers, checkpoints):
    sharded = build_step_classifier(tmp_path / "sharded", seed=0, shards=3)
    assert (sharded / "model.safetensors.index.json").is_file()
    one = edgeprm.load(checkpoints["step-classifier"], device="cpu").score("What is 1+1?", ["1+1 = 2", "so 2"])
    three = edgeprm.load(sharded, device="cpu").score("What is 1+1?", ["1+1 = 2", "so 2"])
    assert one.step_rewards == pytest.approx(three.step_rewards, abs=1e-6)


def test_family_override(checkpoints):
    # The token-prob checkpoint is a plain causal LM with a step tag; force the value-head family: no head file.
    with pytest.raises(FileNotFoundError, match=r"reward_head\.pt is missing: a value-head PRM needs"):
        edgeprm.load(checkpoints["token-prob"], family="value-head")
    with pytest.raises(ValueError, match=r"family must be one of \('step-classifier', 'value-head', 'token-prob'\)"):
        edgeprm.load(checkpoints["token-prob"], family="classifier")


def test_unknown_directory_is_explained(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "plain")
    (d / "reward_head.pt").unlink()
    with pytest.raises(ValueError, match="is none of the supported PRM layouts"):
        edgeprm.load(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        edgeprm.load(empty)


def test_missing_classifier_head_names_the_file(tmp_path, checkpoints):
    d = copy(checkpoints["step-classifier"], tmp_path / "nohead")
    sd = {k: v for k, v in load_file(d / "model.safetensors").items() if not k.startswith("score.0")}
    save_file(sd, d / "model.safetensors")
    with pytest.raises(ValueError, match=r"head tensors \['score.0.weight', 'score.0.bias'\] are missing from "
                                         r"\['model.safetensors'\]"):
        edgeprm.load(d)


def test_head_shape_mismatch_names_the_file(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "badhead")
    torch.save({"weight": torch.zeros(1, 7), "bias": torch.zeros(1)}, d / "reward_head.pt")
    with pytest.raises(ValueError, match=r"reward_head\.pt: weight has shape \(1, 7\), expected \(1, 40\)"):
        edgeprm.load(d)
    d2 = copy(checkpoints["step-classifier"], tmp_path / "badscore")
    sd = load_file(d2 / "model.safetensors")
    sd["score.2.weight"] = torch.zeros(3, 40)
    save_file(sd, d2 / "model.safetensors")
    with pytest.raises(ValueError, match=r"score\.2\.weight has shape \(3, 40\), expected \(2, 40\)"):
        edgeprm.load(d2)


def test_pickled_reward_head_is_refused(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "pickled")
    torch.save(torch.nn.Linear(40, 1), d / "reward_head.pt")  # a whole module: needs unpickling code
    with pytest.raises(ValueError, match="could not be read as a weights-only state dict"):
        edgeprm.load(d)


def test_missing_backbone_tensor(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "nolayer")
    sd = load_file(d / "model.safetensors")
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, d / "model.safetensors")
    with pytest.raises(ValueError, match=r"backbone tensor 'model.layers.1.mlp.up_proj.weight' is missing"):
        edgeprm.load(d)


def test_step_tag_must_be_one_token(checkpoints):
    with pytest.raises(ValueError, match=r"the step tag '<<STEP>>' must be exactly one token"):
        edgeprm.load(checkpoints["token-prob"], step_tag="<<STEP>>")


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


def test_bad_options_are_rejected(checkpoints):
    with pytest.raises(ValueError, match=r"quantization must be one of \(None, 'int8', 'int4'\)"):
        edgeprm.load(checkpoints["value-head"], quantization="int3")
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        edgeprm.load(checkpoints["value-head"], dtype="float8")
    with pytest.raises(ValueError, match=r"aggregation must be one of"):
        edgeprm.load(checkpoints["value-head"], aggregation="median")


def test_config_json_must_parse(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        edgeprm.load(d)
    cfg = json.loads((tmp_path / "badjson" / "tokenizer_config.json").read_text())
    assert cfg["chat_template"]


# -- input formats -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["a\n\nb", "a\n\n\n\nb", "a\n\nb\n\n", "\n\na\n\nb", "one step only", "x\n\n  \n\ny"])
def test_split_rejoins_to_the_same_text(text):
    steps = split_steps(text)
    assert "\n\n".join(steps) == text
    assert all(s.strip() for s in steps)


def test_split_option_and_r1_parsing():
    t = Trajectory.from_solution("p", "a\nb\nc", split="\n")
    assert t.steps == ("a", "b", "c")
    r1 = Trajectory.from_r1("p", "<think>First I add.\n\nThen I check.</think>\n\nThe answer is 4.")
    assert r1.steps == ("First I add.", "Then I check.") and r1.response == "The answer is 4."
    no_open = Trajectory.from_r1("p", "only thinking\n\nmore</think>")
    assert no_open.steps == ("only thinking", "more") and no_open.response is None
    with pytest.raises(ValueError, match="must contain </think>"):
        Trajectory.from_r1("p", "<think>never closed")
    with pytest.raises(ValueError, match="the <think> block is empty"):
        Trajectory.from_r1("p", "<think> </think>answer")
