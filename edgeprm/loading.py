"""Loading PRM checkpoints of the three families from a local directory or a hub id.

Nothing here executes code from a checkpoint: weights come from safetensors (or `torch.load(weights_only=True)`
for `reward_head.pt`), the backbone is transformers' own model class for the config's `model_type`, and the
config's `auto_map` (remote code) is ignored. Only the tensors a family needs are read: the unused `lm_head` of a
step-classifier never enters memory, and a token-prob PRM reads two rows of its LM head.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from edgeprm.families import FAMILIES, Family, TokenProbSpec, parse_family
from edgeprm.kernels.step_head import StepHeadWeights
from edgeprm.tokenizer import PRMTokenizer

REWARD_HEAD_FILE = "reward_head.pt"
CLASSIFIER_HEAD_KEYS = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
HUB_PATTERNS = ["*.json", "*.safetensors", REWARD_HEAD_FILE, "*.model", "*.txt", "*.jinja"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model_dir(model: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a hub id, fetched (or found in the local cache when offline)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    name = str(model)
    if path.exists():
        raise ValueError(f"model {name!r} is a file; pass the checkpoint directory that holds config.json")
    if not _HUB_ID.match(name):
        raise FileNotFoundError(f"model directory {name!r} does not exist (and is not a hub id like 'org/name')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=offline))
    except LocalEntryNotFoundError as e:
        how = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise FileNotFoundError(
            f"model {name!r} is not a local directory and is not in the Hugging Face cache, and {how}; download it "
            f"where the hub is reachable (huggingface-cli download {name}) or pass a local directory") from e
    except Exception as e:  # network errors, gated or missing repositories
        raise FileNotFoundError(f"could not fetch model {name!r} from the hub ({type(e).__name__}: {e}); pass a "
                                "local checkpoint directory instead") from e


def read_config(model_dir: Path) -> dict:
    f = model_dir / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{model_dir} is not a PRM checkpoint: it has no config.json")
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from e


def detect_family(model_dir: Path, config: dict, weights: SafetensorsCheckpoint) -> Family:
    """The family from the files: edgeprm's own config section, the architecture, the head files."""
    declared = (config.get("edgeprm") or {}).get("family")
    if declared:
        return parse_family(declared, f"{model_dir / 'config.json'} ('edgeprm.family')")
    archs = config.get("architectures") or []
    if any("ProcessRewardModel" in a for a in archs) or "score.2.weight" in weights:
        return Family.STEP_CLASSIFIER
    if (model_dir / REWARD_HEAD_FILE).is_file():
        return Family.VALUE_HEAD
    if (config.get("edgeprm") or {}).get("step_tag"):
        return Family.TOKEN_PROB
    raise ValueError(
        f"{model_dir} is none of the supported PRM layouts: expected a step-classifier (architectures "
        f"['Qwen2ForProcessRewardModel'] with score.0/score.2 tensors), a value-head ({REWARD_HEAD_FILE} beside a "
        f"causal LM), or a token-prob PRM (config.json 'edgeprm': {{'step_tag', 'good_token', 'bad_token'}}); "
        f"found architectures={archs}. Pass family=one of {FAMILIES} to choose one.")


class SafetensorsCheckpoint:
    """Lazy view over a checkpoint's safetensors files (single file or sharded with an index)."""

    def __init__(self, model_dir: Path):
        self.model_dir = model_dir
        index = model_dir / "model.safetensors.index.json"
        self.key_to_file: dict[str, Path] = {}
        if index.is_file():
            for k, f in json.loads(index.read_text())["weight_map"].items():
                self.key_to_file[k] = model_dir / f
            missing = sorted({p for p in self.key_to_file.values() if not p.is_file()})
            if missing:
                raise FileNotFoundError(f"{index} names shard files that are missing: {[p.name for p in missing]}")
        else:
            from safetensors import safe_open

            for f in sorted(model_dir.glob("*.safetensors")):
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():
                        self.key_to_file[k] = f

    def __contains__(self, key: str) -> bool:
        return key in self.key_to_file

    def __bool__(self) -> bool:
        return bool(self.key_to_file)

    def keys(self):
        return self.key_to_file.keys()

    def files(self) -> list[str]:
        return sorted({p.name for p in self.key_to_file.values()})

    def get(self, key: str, rows: list[int] | None = None) -> torch.Tensor:
        """One tensor (or some of its rows), read from disk without loading the rest of the file."""
        from safetensors import safe_open

        if key not in self.key_to_file:
            raise KeyError(key)
        with safe_open(str(self.key_to_file[key]), framework="pt") as h:
            if rows is None:
                return h.get_tensor(key)
            sl = h.get_slice(key)
            return torch.stack([sl[r : r + 1][0] for r in rows])


def backbone_prefix(weights: SafetensorsCheckpoint) -> str:
    return "model." if any(k.startswith("model.") for k in weights.keys()) else ""


def build_backbone_config(config: dict):
    """transformers' config object for the checkpoint's model_type; remote-code pointers are dropped."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"config.json model_type {model_type!r} is not a transformers architecture; edgeprm runs "
                         "backbones transformers knows (qwen2, llama, mistral, ...)")
    clean = {k: v for k, v in config.items() if k not in ("auto_map", "edgeprm", "architectures")}
    return CONFIG_MAPPING[model_type].from_dict(clean)


def load_backbone(model_dir: Path, config: dict, weights: SafetensorsCheckpoint, dtype: torch.dtype,
                  device: torch.device, attn_implementation: str = "sdpa", transform=None):
    """transformers' own base model for the config, weights assigned tensor by tensor (no random init).

    `transform(name, meta_module, read)`, when given, is asked once per module that owns tensors, before they are
    read; it returns a replacement module (e.g. a quantized Linear built from `read(tensor_name)`, which returns
    the checked tensor as stored) or None to load the module as usual. Replacements are built one at a time, so
    peak memory stays near the final model's size plus one layer (edgeprm.quantize uses this).
    """
    from transformers import AutoModel

    if not weights:
        raise FileNotFoundError(f"{model_dir} has no *.safetensors weights (edgeprm does not load pickled .bin "
                                "weights; convert them with safetensors first)")
    cfg = build_backbone_config(config)
    cfg._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = AutoModel.from_config(cfg)
    prefix = backbone_prefix(weights)
    expected = dict(model.state_dict())

    def read(name: str) -> torch.Tensor:
        key = prefix + name
        if key not in weights:
            raise ValueError(f"{model_dir}: backbone tensor {key!r} is missing from {weights.files()} "
                             f"(a {config.get('model_type')} model with {cfg.num_hidden_layers} layers expects it)")
        t = weights.get(key)
        if tuple(t.shape) != tuple(expected[name].shape):
            raise ValueError(f"{model_dir}: tensor {key!r} has shape {tuple(t.shape)}, config.json implies "
                             f"{tuple(expected[name].shape)}")
        return t

    state, replaced = {}, {}
    for name in expected:
        owner = name.rpartition(".")[0]
        if transform is not None and owner not in replaced:
            replaced[owner] = transform(owner, model.get_submodule(owner), read)
        if replaced.get(owner) is None:
            state[name] = read(name).to(device=device, dtype=dtype)
    replaced = {k: v for k, v in replaced.items() if v is not None}
    missing = model.load_state_dict(state, strict=not replaced, assign=True).missing_keys
    assert all(k.rpartition(".")[0] in replaced for k in missing), missing
    for owner, module in replaced.items():
        parent, _, attr = owner.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, module)
    # Non-persistent buffers (rotary frequencies) are not in the checkpoint: rebuild those modules for real.
    for mod_name, mod in list(model.named_modules()):
        if any(b.is_meta for b in mod.buffers(recurse=False)):
            fresh = type(mod)(config=cfg).to(device)
            parent, _, attr = mod_name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, fresh)
    model.eval()
    return model


def _check_head(name: str, source: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(t.shape) != shape:
        raise ValueError(f"{source}: {name} has shape {tuple(t.shape)}, expected {shape} for hidden size "
                         f"{shape[-1]} of the backbone")
    return t.float()


def load_classifier_head(model_dir: Path, weights: SafetensorsCheckpoint, hidden: int) -> StepHeadWeights:
    missing = [k for k in CLASSIFIER_HEAD_KEYS if k not in weights]
    if missing:
        raise ValueError(f"{model_dir}: step-classifier head tensors {missing} are missing from "
                         f"{weights.files()}; expected score.0 (Linear {hidden}->{hidden}) and score.2 "
                         f"(Linear {hidden}->2)")
    src = f"{model_dir}/{weights.files()}"
    return StepHeadWeights(
        w1=_check_head("score.0.weight", src, weights.get("score.0.weight"), (hidden, hidden)),
        b1=_check_head("score.0.bias", src, weights.get("score.0.bias"), (hidden,)),
        w2=_check_head("score.2.weight", src, weights.get("score.2.weight"), (2, hidden)),
        b2=_check_head("score.2.bias", src, weights.get("score.2.bias"), (2,)),
    )


def load_value_head(model_dir: Path, hidden: int) -> StepHeadWeights:
    f = model_dir / REWARD_HEAD_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{f} is missing: a value-head PRM needs the reward head's state dict "
                                f"(Linear({hidden}, 1): 'weight' [1, {hidden}], 'bias' [1]) beside the backbone")
    try:
        sd = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{f} could not be read as a weights-only state dict ({e})") from e
    if isinstance(sd, torch.nn.Module) or not isinstance(sd, dict):
        raise ValueError(f"{f} must hold a state dict of Linear({hidden}, 1); got {type(sd).__name__}")
    w = [k for k in sd if k == "weight" or k.endswith(".weight")]
    b = [k for k in sd if k == "bias" or k.endswith(".bias")]
    if len(w) != 1 or len(b) > 1:
        raise ValueError(f"{f} must hold one Linear({hidden}, 1): keys 'weight' and 'bias'; got {sorted(sd)}")
    return StepHeadWeights(
        w2=_check_head(w[0], str(f), sd[w[0]], (1, hidden)),
        b2=_check_head(b[0], str(f), sd[b[0]], (1,)) if b else None,
    )


def load_token_prob_head(model_dir: Path, config: dict, weights: SafetensorsCheckpoint, tokenizer: PRMTokenizer,
                         spec: TokenProbSpec, hidden: int) -> StepHeadWeights:
    good = tokenizer.single_token_id(spec.good_token, "good token")
    bad = tokenizer.single_token_id(spec.bad_token, "bad token")
    vocab = config.get("vocab_size")
    for tok, i in ((spec.good_token, good), (spec.bad_token, bad)):
        if vocab is not None and i >= vocab:
            raise ValueError(f"token {tok!r} has id {i}, outside the model's vocab_size {vocab}")
    prefix = backbone_prefix(weights)
    if "lm_head.weight" in weights:
        key = "lm_head.weight"
    elif config.get("tie_word_embeddings") and prefix + "embed_tokens.weight" in weights:
        key = prefix + "embed_tokens.weight"
    else:
        raise ValueError(f"{model_dir}: a token-prob PRM needs 'lm_head.weight' (or tied embeddings) in "
                         f"{weights.files()}")
    rows = weights.get(key, rows=[bad, good])  # class 1 = good, as the other families' positive class
    bias = weights.get("lm_head.bias", rows=None)[[bad, good]] if "lm_head.bias" in weights else None
    return StepHeadWeights(w2=_check_head(key + " rows", str(model_dir), rows, (2, hidden)),
                           b2=None if bias is None else bias.float())
