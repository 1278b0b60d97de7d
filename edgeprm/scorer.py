"""The scorer: encode trajectories, batch them by length under a token budget, run the backbone, apply the step head.

Results never depend on batching: every sequence gets position ids from its own attention mask (so left and right
padding give the same hidden states) and step positions are shifted by its own padding offset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from edgeprm.encoding import Encoded, Encoder
from edgeprm.families import (
    DEFAULT_AGGREGATION,
    FAMILY_MAX_LENGTH,
    Family,
    check_aggregation,
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
from edgeprm.results import ScoreResult
from edgeprm.tokenizer import PRMTokenizer
from edgeprm.trajectory import DEFAULT_SPLIT, Trajectory, as_trajectory

QUANTIZATIONS = (None, "int8", "int4")
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


class Scorer:
    """Scores trajectories with one loaded PRM. Build it with `edgeprm.load`."""

    def __init__(self, backbone, head, encoder: Encoder, family: Family, device: torch.device,
                 aggregation: str, alpha: float = 1.0, token_budget: int = 8192, max_batch_size: int = 32,
                 padding_side: str = "right", truncate: bool = False, pad_id: int = 0, model_dir: Path | None = None,
                 quantization: str | None = None):
        check_aggregation(aggregation)
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
        if token_budget < 1 or max_batch_size < 1:
            raise ValueError(f"token_budget and max_batch_size must be positive; got {token_budget}, "
                             f"{max_batch_size}")
        self.backbone, self.encoder, self.family, self.device = backbone, encoder, family, device
        self.head = head.to(device=device)
        self.aggregation, self.alpha = aggregation, float(alpha)
        self.token_budget, self.max_batch_size = token_budget, max_batch_size
        self.padding_side, self.truncate, self.pad_id = padding_side, truncate, pad_id
        self.model_dir, self.quantization = model_dir, quantization

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def trajectory(self, problem: str, steps, response: str | None = None, id: str | None = None) -> Trajectory:
        """`steps` as a list of strings, or a solution string split with the scorer's separator."""
        if isinstance(steps, str):
            return Trajectory.from_solution(problem, steps, self.encoder.split, response, id)
        return Trajectory(problem, tuple(steps), response, id)

    def score(self, problem: str, steps, response: str | None = None) -> ScoreResult:
        """Rewards of one trajectory: one step reward per step, the trajectory reward and the aggregated score."""
        return self.score_batch([self.trajectory(problem, steps, response)])[0]

    def score_batch(self, items: Iterable, progress: bool = False) -> list[ScoreResult]:
        """Score Trajectories or row dicts ({"problem", "steps"|"solution", "response"?, "id"?}), in input order."""
        trajs = [as_trajectory(it, self.encoder.split) for it in items]
        encoded = [self.encoder.encode(t, self.truncate) for t in trajs]
        return self.score_encoded(encoded, [t.id for t in trajs], progress)

    def best_of_n(self, problem: str, candidates: Sequence) -> tuple[int, list[ScoreResult]]:
        """Index of the candidate with the highest score (first on ties) and every candidate's result.

        Candidates are step lists, solution strings, or Trajectories of this problem."""
        if not candidates:
            raise ValueError("best_of_n needs at least one candidate; got 0")
        trajs = [c if isinstance(c, Trajectory) else self.trajectory(problem, c, id=str(i))
                 for i, c in enumerate(candidates)]
        results = self.score_batch(trajs)
        keys = [-math.inf if math.isnan(r.score) else r.score for r in results]
        return max(range(len(keys)), key=lambda i: (keys[i], -i)), results

    # -- batching and the forward pass ----------------------------------------------------------------------
    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by length so that batch_size x longest <= token_budget (a longer one goes alone)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out, cur = [], []
        for i in order:
            if cur and ((len(cur) + 1) * lengths[i] > self.token_budget or len(cur) >= self.max_batch_size):
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        return out

    def score_encoded(self, encoded: Sequence[Encoded], ids: Sequence[str | None] | None = None,
                      progress: bool = False) -> list[ScoreResult]:
        ids = ids if ids is not None else [None] * len(encoded)
        results: list[ScoreResult | None] = [None] * len(encoded)
        groups = self.batches([len(e.ids) for e in encoded])
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(encoded), unit="traj", desc="scoring")
        for group in groups:
            for i, r in zip(group, self._score_group([encoded[i] for i in group])):
                results[i] = ScoreResult(**{**r, "id": ids[i]})
            if bar is not None:
                bar.update(len(group))
        if bar is not None:
            bar.close()
        return results

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final (normed) hidden states [B, T, H] of the backbone."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False)
        return out.last_hidden_state

    def _score_group(self, group: Sequence[Encoded]) -> list[dict]:
        t = max(len(e.ids) for e in group)
        b = len(group)
        input_ids = torch.full((b, t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, t), dtype=torch.long)
        shifts = []
        for row, e in enumerate(group):
            n = len(e.ids)
            shift = t - n if self.padding_side == "left" else 0
            input_ids[row, shift : shift + n] = torch.tensor(e.ids)
            mask[row, shift : shift + n] = 1
            shifts.append(shift)
        hidden = self.hidden_states(input_ids.to(self.device), mask.to(self.device))
        positions, offsets, finals = [], [0], []
        for e, shift in zip(group, shifts):
            scored = e.scored_positions
            positions += [p + shift for p in scored]
            offsets.append(len(positions))
            # A truncated trajectory has no trajectory reward; its score uses the value after the last kept step.
            last = e.final_position if e.final_position is not None else (scored[-1] if scored else len(e.ids) - 1)
            finals.append(last + shift)
        dev = hidden.device
        steps, traj, scores = step_head(
            hidden, torch.tensor(positions, dtype=torch.int32, device=dev),
            torch.tensor(offsets, dtype=torch.int32, device=dev), self.head, self.aggregation, self.alpha,
            final_positions=torch.tensor(finals, dtype=torch.int32, device=dev))
        steps, traj, scores = steps.cpu().tolist(), traj.cpu().tolist(), scores.cpu().tolist()
        out = []
        for k, e in enumerate(group):
            it = iter(steps[offsets[k] : offsets[k + 1]])
            out.append({
                "step_rewards": [None if p is None else next(it) for p in e.step_positions],
                "trajectory_reward": traj[k] if e.final_position is not None else None,
                "score": scores[k],
                "truncated": e.truncated,
                "num_tokens": e.full_length,
            })
        return out


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
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}; got {quantization!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "onnx":
        from edgeprm.export.runtime import load_onnx

        return load_onnx(model, quantization=quantization, device=device, family=family, aggregation=aggregation,
                         alpha=alpha, max_length=max_length, truncate=truncate, split=split,
                         token_budget=token_budget, max_batch_size=max_batch_size)
    if quantization is not None:
        raise ValueError(f"quantization={quantization!r} is not available in this build of edgeprm; load with "
                         "quantization=None")
    model_dir = default_model_dir() if model is None else resolve_model_dir(model, revision)
    config = read_config(model_dir)
    weights = SafetensorsCheckpoint(model_dir)
    fam = parse_family(family) if family is not None else detect_family(model_dir, config, weights)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
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
    backbone = load_backbone(model_dir, config, weights, torch_dtype, dev)
    pad_id = tokenizer.pad_token_id
    return Scorer(backbone, head, encoder, fam, dev, aggregation or DEFAULT_AGGREGATION[fam], alpha, token_budget,
                  max_batch_size, padding_side, truncate, pad_id, model_dir, quantization)
