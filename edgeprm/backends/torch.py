"""The torch backend: load a checkpoint, run the backbone on each padded batch, apply the fused step head.

Input handling, batching by length under a token budget, padding and results are shared with the ONNX Runtime
backend in `edgeprm.backends.base` (results never depend on batching: see there). What differs per PRM family (head,
positions, limits) is the family's declaration in `edgeprm.families`.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from edgeprm.backends.base import ScorerBase, group_results
from edgeprm.config import ScorerConfig
from edgeprm.encoding import Encoded, Encoder
from edgeprm.families import detect_family, get_family
from edgeprm.hardware import cpu_info, gpu_info
from edgeprm.kernels.step_head import step_head
from edgeprm.loading import (
    SafetensorsCheckpoint,
    default_model_dir,
    load_backbone,
    read_config,
    resolve_model_dir,
)
from edgeprm.quant.checkpoint import plan_backbone
from edgeprm.tokenizer import PRMTokenizer

# Prefill chunk length by default, [CPU, GPU]: on CPU 1024 tokens keep a 1.5B model's MLP activations near 100 MB
# with no measurable loss in tok/s against one-shot prefill (bench/bench_search.py); a GPU wants longer chunks.
DEFAULT_CHUNK_TOKENS = (1024, 4096)
# Shared-prompt scoring runs groups in waves of at most this many token budgets of trajectories: the cached prompts
# of one wave are what it holds in memory at once.
SHARED_WAVE_BUDGETS = 8
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu' or 'auto'")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """A `ScorerConfig.dtype` name as a torch dtype. "auto" never picks a dtype the hardware lacks: fp32 on CPU (the
    reference precision; every CPU runs it natively), bf16 on a GPU with native bf16 (sm_80 and newer), else fp16.
    Asking for a 16-bit dtype on a CPU without native units for it warns, with what this CPU measured."""
    if dtype == "auto":
        if device.type == "cuda":
            gpu = gpu_info(device.index or 0)
            return torch.bfloat16 if gpu is None or gpu.native_bf16 else torch.float16
        return torch.float32
    chosen = TORCH_DTYPES[dtype]
    cpu = cpu_info()
    if device.type == "cpu" and chosen != torch.float32 and not (cpu.native_bf16 if chosen == torch.bfloat16
                                                                 else cpu.has("avx512_fp16") or cpu.has("amx_fp16")):
        slow, fast = gemm_gflops(chosen), gemm_gflops(torch.float32)
        warnings.warn(f"dtype={dtype!r} on {cpu.model or 'this CPU'}, which has no native {dtype} matrix units: "
                      f"measured just now, a {dtype} matmul runs at {slow:.0f} GFLOP/s against {fast:.0f} GFLOP/s in "
                      "float32. dtype='float32' is faster here (and exact); quantization='int8' is faster still",
                      stacklevel=3)
    return chosen


@functools.cache
def gemm_gflops(dtype: torch.dtype, m: int = 256, k: int = 1536, n: int = 1536, budget_s: float = 0.5) -> float:
    """GFLOP/s of an [m, k] x [k, n] matmul in `dtype` on this CPU (best of 3, after a warm-up). A dtype without
    native units is timed on fewer rows, so that the measurement stays within about `budget_s`: fp16 on an AMD
    EPYC without AVX512-FP16 runs at ~1 GFLOP/s, where the full 256 rows took 3.9 s to time."""
    import time

    def best_of(a, b, calls):
        best = float("inf")
        for _ in range(calls):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        return best

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    rows = 8
    t = best_of(a[:rows], b, 1)  # also the warm-up
    if t * (m / rows) * 4 > budget_s:  # 4 calls of all rows would run past the budget: time the few rows
        return 2 * rows * k * n / min(t, best_of(a[:rows], b, 2)) / 1e9
    a @ b
    return 2 * m * k * n / best_of(a, b, 3) / 1e9


class Scorer(ScorerBase):
    """Scores trajectories with one loaded PRM on torch. Build it with `edgeprm.load`.

    Input handling, batching and results come from `ScorerBase`; this class runs the backbone and the step head.
    """

    def __init__(self, backbone, head, encoder: Encoder, config: ScorerConfig, device: torch.device,
                 model_dir: Path | None = None, quantization: str | None = None, pad_id: int = 0):
        super().__init__(encoder, config, model_dir, quantization, pad_id)
        self.backbone, self.device = backbone, device
        self.head = head.to(device=device)
        self.backbone_tokens = 0  # real (unpadded) tokens the backbone has run on, for search budgets

    @property
    def chunk_tokens(self) -> int | None:
        """Prefill chunk length in effect (None: never chunk); see `ScorerConfig.chunk_tokens`."""
        n = self.config.chunk_tokens
        if n is None:
            n = DEFAULT_CHUNK_TOKENS[self.device.type == "cuda"]
        return n or None

    @property
    def share_prefix(self) -> bool:
        return self.config.share_prefix is not False

    # -- KV-cached scoring (edgeprm.backends.session) --------------------------------------------------------------
    def session(self, problem: str, steps=(), id: str | None = None):
        """A step-by-step scoring session for `problem` (`edgeprm.backends.session.Session`), `steps` already
        added."""
        from edgeprm.backends.session import Session

        s = Session(self, problem, id)
        if isinstance(steps, str):
            raise ValueError("steps must be a list of step strings")
        if steps:
            s.add_steps(list(steps))
        return s

    def extend(self, sessions, texts) -> list[float | None]:
        """One new step for each session in one batched forward (one call per search iteration); each reward."""
        from edgeprm.backends.session import extend

        return extend(self, sessions, texts)

    def score_prepared(self, items, progress: bool = False):
        """As `ScorerBase.score_prepared`; candidates of one problem compute their shared prompt once."""
        from edgeprm.backends.session import score_groups, shared_prompts, waves

        groups = shared_prompts(items) if self.share_prefix and len(items) > 1 else []
        if not groups:
            return super().score_prepared(items, progress)
        results = [None] * len(items)
        grouped = {i for idx, _ in groups for i in idx}
        rest = [i for i in range(len(items)) if i not in grouped]
        for i, r in zip(rest, super().score_prepared([items[i] for i in rest], progress) if rest else []):
            results[i] = r

        def job(wave):
            groups = [([items[i].encoded for i in idx], prefix) for idx, prefix in wave]
            return [i for idx, _ in wave for i in idx], lambda: [r for g in score_groups(self, groups) for r in g]

        budget = SHARED_WAVE_BUDGETS * self.token_budget
        waved = waves(groups, [it.num_tokens for it in items], budget)
        self._fill(results, items, map(job, waved), len(grouped), "scoring shared prompts", progress)
        return results

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final (normed) hidden states [B, T, H] of the backbone (rows at pad positions are unspecified)."""
        mask = attention_mask
        if attention_mask[:, 0].all() and (attention_mask[:, 1:] <= attention_mask[:, :-1]).all():
            # Right padding: under causal attention no real token sees a pad after it, so the real tokens' states
            # are those of the masked forward without any mask, and the attention runs its causal kernel instead
            # of building and applying a [B, 1, T, T] mask (pads get positions past their row's end: unused).
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
            mask = None
        else:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.backbone(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        self.backbone_tokens += int(attention_mask.sum())
        return out.last_hidden_state

    def _score_group(self, group: Sequence[Encoded]) -> list[dict]:
        chunk = self.chunk_tokens
        if chunk is not None and max(len(e.ids) for e in group) > chunk:
            from edgeprm.backends.session import score_encoded

            return score_encoded(self, group)  # chunked prefill through the KV cache
        batch = self.pad(group)
        hidden = self.hidden_states(torch.from_numpy(batch.input_ids).to(self.device),
                                    torch.from_numpy(batch.attention_mask).to(self.device))
        positions = [p for row in batch.step_positions for p in row]
        offsets = [0]
        for row in batch.step_positions:
            offsets.append(offsets[-1] + len(row))
        dev = hidden.device
        steps, traj, scores = step_head(
            hidden, torch.tensor(positions, dtype=torch.int32, device=dev),
            torch.tensor(offsets, dtype=torch.int32, device=dev), self.head, self.aggregation, self.alpha,
            final_positions=torch.tensor(batch.final_positions, dtype=torch.int32, device=dev))
        steps, traj, scores = steps.cpu().tolist(), traj.cpu().tolist(), scores.cpu().tolist()
        return group_results(group, [steps[a:b] for a, b in zip(offsets, offsets[1:])], traj, scores)


def load(model: str | os.PathLike | None, config: ScorerConfig, smoothing=None, pack_fp32: bool = True) -> Scorer:
    """Load a checkpoint (local directory or hub id; None = the bundled demo PRM) for the torch backend.

    The family is detected from the files unless `config.family` names one; a quantized checkpoint (written by
    `edgeprm quantize`) is rebuilt from its stored tensors, and `config.quantization` quantizes a full-precision one
    while it loads. `smoothing` (an `edgeprm.quant.calibrate.Smoothing`, for the ONNX exporter) loads the smoothed
    full-precision model. `pack_fp32`: on a CPU where oneDNN's packed fp32 GEMM was measured faster than torch's
    default (`edgeprm.quant.select.fp32_gemm`), float32 decoder Linear layers run on it (the exporter, which traces
    the model, passes False).
    """
    model_dir = default_model_dir() if model is None else resolve_model_dir(model, config.revision)
    hf_config = read_config(model_dir)
    weights = SafetensorsCheckpoint(model_dir)
    fam = get_family(config.family) if config.family is not None else detect_family(model_dir, hf_config, weights)
    overrides = config.family_options(fam)
    dev = resolve_device(config.device)
    torch_dtype = resolve_dtype(config.dtype, dev)
    # A quantized checkpoint (its manifest) or a scheme: the Linear layers are rebuilt/quantized as they load.
    quantization, transform, backbone_weights = plan_backbone(model_dir, weights, config.quantization, dev,
                                                              torch_dtype)
    tokenizer = PRMTokenizer.from_dir(model_dir)
    hidden = hf_config.get("hidden_size")
    if not isinstance(hidden, int):
        raise ValueError(f"{model_dir / 'config.json'} has no integer hidden_size")
    options = fam.options(hf_config, overrides)
    head = fam.load_head(model_dir, hf_config, weights, tokenizer, options, hidden)
    encoder = Encoder(fam, tokenizer, fam.max_length(hf_config, config.max_length), config.split, options)
    if smoothing is not None:
        from edgeprm.quant.calibrate import SmoothedCheckpoint

        backbone_weights = SmoothedCheckpoint(backbone_weights, smoothing)
    backbone = load_backbone(model_dir, hf_config, backbone_weights, torch_dtype, dev, transform=transform)
    resolved = config.replace(family=str(fam), aggregation=config.aggregation or fam.default_aggregation,
                              max_length=encoder.max_length)
    fp32_gemm = "mkl" if dev.type == "cpu" else None
    if pack_fp32 and dev.type == "cpu" and torch_dtype == torch.float32 and quantization is None:
        from edgeprm.quant.select import fp32_gemm as measured_fp32_gemm

        if measured_fp32_gemm() == "onednn":
            from edgeprm.kernels.cpu_linear import pack_linears

            fp32_gemm = "onednn" if pack_linears(backbone) else fp32_gemm
    scorer = Scorer(backbone, head, encoder, resolved, dev, model_dir, quantization, tokenizer.pad_token_id)
    scorer.fp32_gemm = fp32_gemm  # "onednn" | "mkl": which engine runs the float32 decoder Linear layers
    scorer.quant_kernel = getattr(transform, "kernel", None)  # e.g. "onednn": the kernel measured fastest here
    return scorer
