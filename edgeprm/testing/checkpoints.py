"""Tiny PRM checkpoints in the exact on-disk layouts of the real ones (random weights, a locally trained tokenizer).

Tests and benchmarks use these; the loaders treat them exactly like a real download:
- `step-classifier`: `config.json` (architectures=["Qwen2ForProcessRewardModel"], model_type=qwen2), safetensors
  with `model.*` backbone keys, head `score.0.*` (H->H) and `score.2.*` (H->2) and an unused `lm_head.weight`
  (optionally sharded with a `model.safetensors.index.json`); a tokenizer with `<extra_0>`.
- `value-head`: a Qwen2 causal LM checkpoint (tied embeddings) + `reward_head.pt` = state dict of Linear(H, 1).
- `token-prob`: a Qwen2 causal LM whose `config.json` names the step tag and the good/bad tokens.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch
from safetensors.torch import save_file

from edgeprm.families.step_classifier import SEP_TOKEN
from edgeprm.families.token_prob import STEP_TAG

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", SEP_TOKEN, "<extra_1>", "<think>", "</think>"]

# Qwen2's pre-tokenizer split: digits one per token, letters with one optional leading non-letter, punctuation
# runs that swallow trailing newlines, newline runs, then other whitespace.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-style chat template (system default, <|im_start|>role\ncontent<|im_end|>\n, optional generation prompt).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = (
    "the step so we have total each then answer is of to and a number sum product difference left remaining "
    "Janet ducks eggs per day sells market dollars she bakes friends muffins price cost apples oranges boxes "
    "Step Let compute first second multiply divide add subtract equals therefore final boxed Please reason "
    "by put your within problem solution assistant user system question hours minutes miles speed rate"
).split()


def _corpus(n_lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        a, b = rng.randint(0, 999), rng.randint(1, 99)
        op = rng.choice("+-*/=")
        lines.append(f"Step {rng.randint(1, 9)}: {' '.join(words)} {a} {op} {b} = {a + b}. ки\n"
                     f"{rng.choice(_WORDS).capitalize()} \\boxed{{{a}}}, $x$ (a-b)*c; ки\n\n")
    return lines


def build_tokenizer(out_dir: str | os.PathLike, vocab_size: int = 640, seed: int = 0, corpus: list[str] | None = None):
    """Train a small byte-level BPE tokenizer with Qwen2's split, special tokens and chat template; save it.

    Returns the loaded transformers tokenizer. `corpus` overrides the built-in synthetic text.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus if corpus is not None else _corpus(2000, seed), trainer=trainer)
    tok.save(str(out_dir / "tokenizer.json"))
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for t in SPECIAL_TOKENS}
    cfg = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "errors": "replace",
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    return AutoTokenizer.from_pretrained(str(out_dir))


def tiny_qwen2_config(vocab_size: int, hidden_size: int = 40, num_layers: int = 2, num_heads: int = 4,
                      num_kv_heads: int = 2, intermediate_size: int = 72, max_position_embeddings: int = 4096,
                      tie_word_embeddings: bool = False, **extra) -> dict:
    """config.json contents of a small Qwen2 model (head_dim = hidden_size / num_heads must be even)."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": "float32",
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "bos_token_id": None,
        "eos_token_id": 2,
        "pad_token_id": 0,
        **extra,
    }


def random_backbone_state(config: dict, seed: int, std: float = 0.5) -> dict[str, torch.Tensor]:
    """Random weights for a Qwen2 backbone under transformers' own key names (`model.*` prefix)."""
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(seed)
    cfg = Qwen2Config.from_dict({**config, "initializer_range": std / 10})
    model = Qwen2Model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("embed_tokens.weight"):
                p.normal_(0.0, std)
            else:
                p.normal_(0.0, std / p.shape[-1] ** 0.5)
    return {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}


def write_safetensors(out_dir: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    if shards <= 1:
        save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    keys = sorted(tensors)
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[i::shards]}
        save_file(part, str(out_dir / name), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def build_step_classifier(out_dir: str | os.PathLike, seed: int = 0, shards: int = 1, tokenizer_dir=None,
                          head_bias: tuple[float, float] | None = None, **config_kw) -> Path:
    """Write a tiny Qwen2ForProcessRewardModel checkpoint (backbone + score.0/score.2 head + unused lm_head).

    `tokenizer_dir` reuses a tokenizer written by `build_tokenizer` instead of training the default one.

    `head_bias` sets score.2's bias, e.g. (0, -200) to make the positive probability underflow to exactly 0.
    """
    out_dir = Path(out_dir)
    if tokenizer_dir is None:
        tok = build_tokenizer(out_dir, seed=seed)
    else:  # reuse a tokenizer built with build_tokenizer (e.g. trained on the data to be scored)
        from transformers import AutoTokenizer

        out_dir.mkdir(parents=True, exist_ok=True)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (out_dir / f).write_bytes((Path(tokenizer_dir) / f).read_bytes())
        tok = AutoTokenizer.from_pretrained(str(out_dir))
    config = tiny_qwen2_config(len(tok), **config_kw)
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    config["auto_map"] = {"AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
                          "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    tensors = random_backbone_state(config, seed)
    h = config["hidden_size"]
    g = torch.Generator().manual_seed(seed + 1)
    tensors["score.0.weight"] = torch.randn(h, h, generator=g) / h**0.5
    tensors["score.0.bias"] = 0.1 * torch.randn(h, generator=g)
    tensors["score.2.weight"] = torch.randn(2, h, generator=g) * (2.0 / h**0.5)
    tensors["score.2.bias"] = torch.tensor(head_bias, dtype=torch.float32) if head_bias else torch.zeros(2)
    tensors["lm_head.weight"] = torch.randn(config["vocab_size"], h, generator=g) * 0.02
    write_safetensors(out_dir, tensors, shards)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def build_value_head(out_dir: str | os.PathLike, seed: int = 0, **config_kw) -> Path:
    """Write a tiny Qwen2 causal LM (tied embeddings) + `reward_head.pt` (Linear(H, 1) state dict)."""
    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir, seed=seed)
    config = tiny_qwen2_config(len(tok), tie_word_embeddings=True, **config_kw)
    tensors = random_backbone_state(config, seed)
    write_safetensors(out_dir, tensors, 1)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    g = torch.Generator().manual_seed(seed + 2)
    h = config["hidden_size"]
    head = {"weight": torch.randn(1, h, generator=g) * (2.0 / h**0.5), "bias": torch.randn(1, generator=g)}
    torch.save(head, out_dir / "reward_head.pt")
    return out_dir


def build_token_prob(out_dir: str | os.PathLike, seed: int = 0, step_tag: str = STEP_TAG, good_token: str = "+",
                     bad_token: str = "-", **config_kw) -> Path:
    """Write a tiny Qwen2 causal LM (untied lm_head) whose config names a step tag and a good/bad token pair."""
    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir, seed=seed)
    config = tiny_qwen2_config(len(tok), **config_kw)
    config["edgeprm"] = {"family": "token-prob", "step_tag": step_tag, "good_token": good_token,
                         "bad_token": bad_token}
    tensors = random_backbone_state(config, seed)
    g = torch.Generator().manual_seed(seed + 3)
    tensors["lm_head.weight"] = torch.randn(config["vocab_size"], config["hidden_size"], generator=g) * 0.3
    write_safetensors(out_dir, tensors, 1)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


BUILDERS = {"step-classifier": build_step_classifier, "value-head": build_value_head, "token-prob": build_token_prob}
