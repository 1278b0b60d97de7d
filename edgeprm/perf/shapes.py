"""Random PRMs of the exact shapes of real checkpoints, for benchmarks: the benchmark subject when no model is given.

`write_random_value_head(out, "qwen2.5-1.5b", layers=4)` writes a ReasonFlux-PRM-1.5B-shaped value-head PRM (bf16
safetensors, `reward_head.pt`, a small local tokenizer) cut to `layers` layers. Tensors are drawn one at a time with
the scaling of `edgeprm.testing.checkpoints.random_backbone_state`, so no fp32 copy of the model is ever built; a
directory that already holds the model is reused.
"""

from __future__ import annotations

import json
from pathlib import Path

SHAPES = {
    # hidden, layers, heads / KV heads, intermediate, vocabulary of the real checkpoints
    "qwen2.5-1.5b": dict(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960,
                         vocab_size=151_936, max_position_embeddings=32768, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, intermediate_size=18944,
                       vocab_size=152_064, max_position_embeddings=32768, tie_word_embeddings=False),
}


def shape_config(shape: str, layers: int | None = None) -> dict:
    """config.json of a Qwen2 model of a named shape (`SHAPES`), optionally cut to `layers` layers."""
    from edgeprm.testing.checkpoints import tiny_qwen2_config

    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {tuple(SHAPES)}; got {shape!r}")
    spec = dict(SHAPES[shape])
    vocab = spec.pop("vocab_size")
    if layers is not None:
        if layers < 1:
            raise ValueError(f"layers must be positive; got {layers}")
        spec["num_layers"] = layers
    return tiny_qwen2_config(vocab, **spec, torch_dtype="bfloat16")


def write_random_value_head(out: str | Path, shape: str = "qwen2.5-1.5b", layers: int | None = None,
                            seed: int = 0) -> Path:
    """Write (or reuse) a random value-head PRM of `shape` at `out`; returns the directory."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel

    from edgeprm.loading import build_backbone_config
    from edgeprm.testing.checkpoints import build_tokenizer

    out = Path(out)
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    build_tokenizer(tmp, seed=seed)
    config = shape_config(shape, layers)
    with torch.device("meta"):
        meta = AutoModel.from_config(build_backbone_config(config))
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, ref in meta.state_dict().items():
        if name.endswith("norm.weight") or "layernorm" in name:
            t = 1.0 + 0.1 * torch.randn(ref.shape, generator=g)
        elif name.endswith("embed_tokens.weight"):
            t = 0.5 * torch.randn(ref.shape, generator=g)
        else:
            t = torch.randn(ref.shape, generator=g) * (0.5 / ref.shape[-1] ** 0.5)
        tensors[f"model.{name}"] = t.to(torch.bfloat16)
        del t
    if not config["tie_word_embeddings"]:
        h, v = config["hidden_size"], config["vocab_size"]
        tensors["lm_head.weight"] = (0.02 * torch.randn(v, h, generator=g)).to(torch.bfloat16)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    h = config["hidden_size"]
    torch.save({"weight": torch.randn(1, h, generator=g) * (2.0 / h**0.5), "bias": torch.zeros(1)},
               tmp / "reward_head.pt")
    tmp.rename(out)
    return out
