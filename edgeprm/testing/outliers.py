"""An outlier stress model: a function-preserving transform of a trained PRM that gives chosen hidden channels
k-times activations at every projection input, as real Qwen2.5 / Llama checkpoints have (a few channels 20-100x the
rest at the inputs of the attention and MLP projections).

    add_activation_outliers(demo_dir, out_dir, factor=64, channels=4, seed=0)

Per layer: the chosen channels of `input_layernorm` and `post_attention_layernorm` are multiplied by `factor` and
the matching input columns of the projections they feed (q/k/v, gate/up) divided by it; chosen rows of `up_proj` are
multiplied by `factor` and the matching input columns of `down_proj` divided by it. In exact arithmetic every
projection output is unchanged, so fp32 rewards stay the same: bit for bit with a power-of-two factor, within 1e-5
otherwise (tests/testing/test_outliers.py, tests/quant/test_fidelity.py), while
the activations a quantizer sees now carry the outliers. The checkpoint keeps its layout, tokenizer and head files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def add_activation_outliers(src: str | Path, out: str | Path, factor: float = 64.0, channels: int = 4,
                            seed: int = 0) -> Path:
    """Write the stressed copy of checkpoint `src` to `out`; returns `out`. The channels are drawn per layer."""
    import torch
    from safetensors.torch import save_file

    from edgeprm.loading import SafetensorsCheckpoint, read_config

    src, out = Path(src), Path(out)
    if factor <= 0 or channels < 1:
        raise ValueError(f"need factor > 0 and channels >= 1; got {factor}, {channels}")
    config = read_config(src)
    weights = SafetensorsCheckpoint(src)
    p = weights.backbone_prefix
    tensors = {k: weights.get(k).clone() for k in weights.keys()}
    h, inter = config["hidden_size"], config["intermediate_size"]
    g = torch.Generator().manual_seed(seed)
    chosen = {}
    for i in range(config["num_hidden_layers"]):
        layer = f"{p}layers.{i}."
        for norm, consumers in (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                                ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
            c = torch.randperm(h, generator=g)[:channels]
            tensors[layer + norm + ".weight"][c] *= factor
            for proj in consumers:
                tensors[layer + proj + ".weight"][:, c] /= factor
            chosen[layer + norm] = c.tolist()
        c = torch.randperm(inter, generator=g)[:channels]
        tensors[layer + "mlp.up_proj.weight"][c] *= factor
        tensors[layer + "mlp.down_proj.weight"][:, c] /= factor
        chosen[layer + "mlp.down_proj"] = c.tolist()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
            shutil.copy2(f, out / f.name)
    (out / "outliers.json").write_text(json.dumps({"factor": factor, "channels": chosen, "source": str(src)},
                                                  indent=1))
    return out
