"""llama.cpp as a peer on the same weights: a Qwen2 PRM checkpoint written as GGUF, quantized by llama.cpp itself,
run through `llama-cpp-python` for per-token final hidden states, with edgeprm's reward head applied to them.

    path = write_gguf(checkpoint_dir, "model.f16.gguf")          # the `gguf` library (llama.cpp's own writer)
    quantize_gguf(path, "model.q4_k_m.gguf", "Q4_K_M")           # llama_model_quantize
    backbone = LlamaCppBackbone("model.q4_k_m.gguf", threads=2)
    hidden = backbone.hidden_states(token_ids)                   # [T, H] float32, after the final norm

Only for benchmarks (`bench/bench_peers.py`, `edgeprm bench --peers`): tokenization stays edgeprm's, so both sides
see the same ids. The GGUF holds a placeholder vocabulary of the model's size (the ids are given, never the text).
"""

from __future__ import annotations

import json
from pathlib import Path

GGUF_TYPES = ("F16", "Q8_0", "Q4_K_M", "Q4_0")
# Checkpoint tensor names (after the "model." prefix) -> GGUF names, per layer where {i} appears.
_NAMES = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "layers.{i}.self_attn.q_proj.bias": "blk.{i}.attn_q.bias",
    "layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "layers.{i}.self_attn.k_proj.bias": "blk.{i}.attn_k.bias",
    "layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "layers.{i}.self_attn.v_proj.bias": "blk.{i}.attn_v.bias",
    "layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}


def write_gguf(checkpoint: str | Path, out: str | Path) -> Path:
    """A Qwen2 checkpoint directory (safetensors) as an F16 GGUF file (norms and biases in F32)."""
    import gguf
    import numpy as np
    import torch

    from edgeprm.loading import SafetensorsCheckpoint

    checkpoint, out = Path(checkpoint), Path(out)
    cfg = json.loads((checkpoint / "config.json").read_text())
    if cfg.get("model_type") != "qwen2":
        raise ValueError(f"write_gguf writes Qwen2 checkpoints; {checkpoint} is {cfg.get('model_type')!r}")
    weights = SafetensorsCheckpoint(checkpoint)
    prefix = weights.backbone_prefix
    w = gguf.GGUFWriter(str(out), "qwen2")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = cfg["vocab_size"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([f"<id{i}>" for i in range(vocab)])
    w.add_token_types([gguf.TokenType.NORMAL] * vocab)
    w.add_token_merges(["< i"])  # llama.cpp wants at least one merge; the ids are given, never tokenized
    for i in range(-1, cfg["num_hidden_layers"]):
        for src, dst in _NAMES.items():
            if ("{i}" in src) != (i >= 0):
                continue
            key = prefix + src.format(i=i)
            if key not in weights:
                continue
            t = weights.get(key).to(torch.float32)
            as_f16 = t.dim() == 2
            w.add_tensor(dst.format(i=i), t.numpy().astype(np.float16 if as_f16 else np.float32))
    if "lm_head.weight" in weights and not cfg.get("tie_word_embeddings"):
        w.add_tensor("output.weight", weights.get("lm_head.weight").to(torch.float32).numpy().astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def quantize_gguf(src: str | Path, dst: str | Path, kind: str, threads: int = 2) -> Path:
    """llama.cpp's own quantizer: `kind` in GGUF_TYPES (F16 copies)."""
    import llama_cpp

    if kind not in GGUF_TYPES:
        raise ValueError(f"kind must be one of {GGUF_TYPES}; got {kind!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {kind}) failed with {rc}")
    return Path(dst)


class LlamaCppBackbone:
    """A GGUF model run by llama.cpp for its per-token final hidden states (embeddings mode, no pooling)."""

    def __init__(self, path: str | Path, threads: int = 2, n_ctx: int = 4096):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                                   n_threads=threads, n_threads_batch=threads, verbose=False,
                                   pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE)
        self.hidden = self.llm.n_embd()

    def hidden_states(self, ids: list[int]):
        """Final (normed) hidden states [T, H] float32 of one sequence of token ids."""
        import llama_cpp
        import numpy as np

        self.llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        batch = llama_cpp.llama_batch_init(len(ids), 0, 1)
        try:
            batch.n_tokens = len(ids)
            for i, t in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, True
            if llama_cpp.llama_decode(self.llm.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            ptr = llama_cpp.llama_get_embeddings(self.llm.ctx)
            return np.ctypeslib.as_array(ptr, shape=(len(ids) * self.hidden,)).reshape(len(ids), self.hidden).copy()
        finally:
            llama_cpp.llama_batch_free(batch)
