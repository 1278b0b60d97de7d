"""Reading PRM checkpoints from a local directory or a hub id: files, config, tensors, and the backbone.

Nothing here executes code from a checkpoint: weights come from safetensors (the heads' own files are read by their
families, `reward_head.pt` with `torch.load(weights_only=True)`), the backbone is transformers' own model class for
the config's `model_type`, and the config's `auto_map` (remote code) is ignored. Only the tensors a family needs
are read: the unused `lm_head` of a step-classifier never enters memory, and a token-prob PRM reads two rows of its
LM head. torch is imported where tensors are read, so resolving and reading a directory needs no torch.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprm.families.value_head import REWARD_HEAD_FILE

if TYPE_CHECKING:
    import torch

HUB_PATTERNS = ["*.json", "*.safetensors", REWARD_HEAD_FILE, "*.model", "*.txt", "*.jinja"]
ASSETS = Path(__file__).resolve().parent / "assets"  # the files that ship with the package
DEMO_MODEL_DIR = ASSETS / "demo-prm"


def cache_dir() -> Path:
    """Where edgeprm keeps what it measured or computed once per machine or checkpoint (kernel choices,
    calibrations, traced graphs): `$EDGEPRM_CACHE`, default ~/.cache/edgeprm."""
    return Path(os.environ.get("EDGEPRM_CACHE", Path.home() / ".cache" / "edgeprm"))


def default_model_dir() -> Path:
    """The bundled demo PRM (`edgeprm/assets/demo-prm`): what `edgeprm.load()` and the CLI use without a model."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(f"the bundled demo PRM is missing from {DEMO_MODEL_DIR} (a partial install?); "
                                "reinstall edgeprm, or pass a model directory")
    return DEMO_MODEL_DIR
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
                with safe_open(str(f), framework="numpy") as h:  # key listing only: no torch needed
                    for k in h.keys():
                        self.key_to_file[k] = f

    def __contains__(self, key: str) -> bool:
        return key in self.key_to_file

    def __bool__(self) -> bool:
        return bool(self.key_to_file)

    def keys(self):
        return self.key_to_file.keys()

    @property
    def backbone_prefix(self) -> str:
        """"model." when the backbone's tensors carry it (a PRM's own checkpoint), else "" (a bare backbone)."""
        return "model." if any(k.startswith("model.") for k in self.key_to_file) else ""

    def files(self) -> list[str]:
        return sorted({p.name for p in self.key_to_file.values()})

    def get(self, key: str, rows: list[int] | None = None) -> torch.Tensor:
        """One tensor (or some of its rows), read from disk without loading the rest of the file."""
        import torch
        from safetensors import safe_open

        if key not in self.key_to_file:
            raise KeyError(key)
        with safe_open(str(self.key_to_file[key]), framework="pt") as h:
            if rows is None:
                return h.get_tensor(key)
            sl = h.get_slice(key)
            return torch.stack([sl[r : r + 1][0] for r in rows])


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
    peak memory stays near the final model's size plus one layer (`edgeprm.quant.modules.make_transform` uses this).
    """
    import torch
    from transformers import AutoModel

    if not weights:
        raise FileNotFoundError(f"{model_dir} has no *.safetensors weights (edgeprm does not load pickled .bin "
                                "weights; convert them with safetensors first)")
    cfg = build_backbone_config(config)
    cfg._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = AutoModel.from_config(cfg)
    prefix = weights.backbone_prefix
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
