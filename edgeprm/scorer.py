"""The torch scorer: run the backbone on each padded batch and apply the step head; loading of a checkpoint.

Input handling, batching by length under a token budget, padding and results are shared with the ONNX Runtime backend
in `edgeprm.scoring_base` (results never depend on batching: see there).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from edgeprm.encoding import Encoded, Encoder
from edgeprm.families import (
    DEFAULT_AGGREGATION,
    FAMILY_MAX_LENGTH,
    Family,
    parse_family,
    token_prob_spec_from,
)
from edgeprm.kernels.step_head import step_head
from edgeprm.loading import (
    SafetensorsCheckpoint,
    detect_family,
    load_backbone,
    load_classifier_head,
    load_token_prob_head,
    load_value_head,
    read_config,
    resolve_model_dir,
)
from edgeprm.quantize import SCHEMES, QuantConfig, plan_backbone
from edgeprm.scoring_base import ScorerBase, group_results
from edgeprm.tokenizer import PRMTokenizer
from edgeprm.trajectory import DEFAULT_SPLIT

QUANTIZATIONS = (None, *SCHEMES)  # see edgeprm.quantize; the torch backend also takes a QuantConfig
BACKENDS = ("torch", "onnx")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu' or 'auto'")
    return dev


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)} or 'auto'; got {dtype!r}")
    return DTYPES[dtype]


class Scorer(ScorerBase):
    """Scores trajectories with one loaded PRM on torch. Build it with `edgeprm.load`.

    Input handling, batching and results come from `ScorerBase`; this class runs the backbone and the step head.
    """

    def __init__(self, backbone, head, encoder: Encoder, family: Family, device: torch.device,
                 aggregation: str, alpha: float = 1.0, token_budget: int = 8192, max_batch_size: int = 32,
                 padding_side: str = "right", truncate: bool = False, pad_id: int = 0, model_dir: Path | None = None,
                 quantization: str | None = None):
        super().__init__(encoder, family, aggregation, alpha, token_budget, max_batch_size, padding_side, truncate,
                         pad_id, model_dir, quantization)
        self.backbone, self.device = backbone, device
        self.head = head.to(device=device)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final (normed) hidden states [B, T, H] of the backbone."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False)
        return out.last_hidden_state

    def _score_group(self, group: Sequence[Encoded]) -> list[dict]:
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


def default_model_dir() -> Path:
    """The bundled demo PRM; until it is shipped, a tiny random step-classifier built once into a cache dir."""
    bundled = Path(__file__).parent / "assets" / "demo-prm"
    if (bundled / "config.json").is_file():
        return bundled
    cache = Path(os.environ.get("EDGEPRM_CACHE", Path.home() / ".cache" / "edgeprm")) / "tiny-step-classifier"
    if not (cache / "config.json").is_file():
        from edgeprm.fixtures import build_step_classifier

        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        build_step_classifier(tmp, seed=0)
        try:
            tmp.rename(cache)  # atomic: a concurrent first run either wins or finds the finished directory
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def load(model: str | os.PathLike | None = None, quantization: str | None = None, backend: str = "torch",
         device: str = "auto", *, family: str | None = None, dtype: str | torch.dtype | None = "auto",
         aggregation: str | None = None, alpha: float = 1.0, max_length: int | None = None, truncate: bool = False,
         split: str = DEFAULT_SPLIT, step_tag: str | None = None, good_token: str | None = None,
         bad_token: str | None = None, token_budget: int = 8192, max_batch_size: int = 32,
         padding_side: str = "right", revision: str | None = None) -> Scorer:
    """Load a PRM (local directory or hub id; None = the bundled default) and return its Scorer.

    The family (step-classifier | value-head | token-prob) is detected from the files; `family=` overrides it.
    `aggregation` picks how `score` combines the rewards (default per family: see DEFAULT_AGGREGATION).
    """
    if quantization not in QUANTIZATIONS and not (backend == "torch" and isinstance(quantization, QuantConfig)):
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}; got {quantization!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "onnx":
        from edgeprm.export.runtime import load_onnx

        return load_onnx(model, quantization=quantization, device=device, family=family, aggregation=aggregation,
                         alpha=alpha, max_length=max_length, truncate=truncate, split=split,
                         token_budget=token_budget, max_batch_size=max_batch_size)
    model_dir = default_model_dir() if model is None else resolve_model_dir(model, revision)
    config = read_config(model_dir)
    weights = SafetensorsCheckpoint(model_dir)
    fam = parse_family(family) if family is not None else detect_family(model_dir, config, weights)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    # A quantized checkpoint (edgeprm.json) or a scheme: the Linear layers are rebuilt/quantized as they load.
    quantization, transform = plan_backbone(model_dir, weights, quantization, dev, torch_dtype)
    tokenizer = PRMTokenizer.from_dir(model_dir)
    hidden = config.get("hidden_size")
    if not isinstance(hidden, int):
        raise ValueError(f"{model_dir / 'config.json'} has no integer hidden_size")
    spec = token_prob_spec_from(config, step_tag, good_token, bad_token)
    if fam is Family.STEP_CLASSIFIER:
        head = load_classifier_head(model_dir, weights, hidden)
    elif fam is Family.VALUE_HEAD:
        head = load_value_head(model_dir, hidden)
    else:
        head = load_token_prob_head(model_dir, config, weights, tokenizer, spec, hidden)
    limit = config.get("max_position_embeddings") or 4096
    limit = min(limit, FAMILY_MAX_LENGTH.get(fam, limit))
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length must be positive; got {max_length}")
        limit = max_length
    encoder = Encoder(fam, tokenizer, limit, split, spec if fam is Family.TOKEN_PROB else None)
    backbone = load_backbone(model_dir, config, weights, torch_dtype, dev, transform=transform)
    pad_id = tokenizer.pad_token_id
    return Scorer(backbone, head, encoder, fam, dev, aggregation or DEFAULT_AGGREGATION[fam], alpha, token_budget,
                  max_batch_size, padding_side, truncate, pad_id, model_dir, quantization)
