"""Memory of a loaded scorer: weight bytes per component, peak RSS in a fresh process."""

import json
import math

import edgeprm
from edgeprm.backends.memory import COMPONENTS, measure_peak_rss, weight_bytes

from ..quant.shared import bnb


def test_weight_bytes_per_component(checkpoints, scorers):
    cfg = json.loads((checkpoints["step-classifier"] / "config.json").read_text())
    h, inter, v, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    attn_params = layers * (h * h * 2 + h * kv * 2 + h + 2 * kv)  # q, o, k, v weights; q, k, v biases
    mlp_params = layers * 3 * h * inter
    fp32 = weight_bytes(scorers["step-classifier"])
    assert fp32["embeddings"] == 4 * v * h and fp32["attention"] == 4 * attn_params
    assert fp32["mlp"] == 4 * mlp_params and fp32["norms"] == 4 * h * (2 * layers + 1)
    assert fp32["head"] == 4 * (h * h + h + 2 * h + 2) and fp32["total"] == sum(fp32[c] for c in COMPONENTS)
    i8 = weight_bytes(edgeprm.load(checkpoints["step-classifier"], quantization="int8", device="cpu"))
    for c in ("embeddings", "norms", "head"):
        assert fp32[c] == i8[c]
    mlp_rows = layers * (2 * inter + h)  # output rows of gate, up, down
    assert i8["mlp"] == mlp_params + 12 * mlp_rows  # 1 byte per weight; scale, zero point, column offset per row
    if bnb is None:
        return
    i4 = weight_bytes(edgeprm.load(checkpoints["step-classifier"], quantization="int4", device="cpu"))
    assert all(fp32[c] == i4[c] for c in ("embeddings", "norms", "head"))
    blocks = layers * (2 * math.ceil(h * inter / 64) + math.ceil(inter * h / 64))
    assert i4["mlp"] == mlp_params // 2 + 4 * blocks + layers * 3 * 64  # half a byte, an fp32 absmax per 64, codebook


def test_measure_peak_rss_in_a_fresh_process(checkpoints):
    r = measure_peak_rss(checkpoints["value-head"], "int8", tokens=200, repeats=1, timeout=300, device="cpu")
    assert r["tokens"] >= 200 and r["tokens_per_s"] > 0 and r["quantization"] == "int8"
    assert 0 < r["import_rss"] <= r["load_rss"] <= r["peak_rss"] < 8 * 2**30
    assert r["weight_bytes"]["total"] > 0
