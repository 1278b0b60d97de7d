"""Calibrated channel migration: the outlier fix for int8 (SmoothQuant-style) and the calibration of int4 (AWQ-style).

A few hidden channels of real Qwen2.5 / Llama checkpoints carry activations 20-100x the rest at the projection
inputs. int8 with per-token activation scales then spends its range on them and flattens the others; 4-bit weights
lose the small columns those channels meet. Both are fixed by the same function-preserving transform: per input
channel j of a projection group, divide the activation by s_j and multiply the weight column by s_j, with the
division folded into what produces the activation (the RMSNorm weight before q/k/v and gate/up; the rows of up_proj
before down_proj), so it costs nothing at run time and serves every backend (the ONNX export too):

    s_j = a_j ** alpha / w_j ** (1 - alpha)

with w_j the largest |weight| of column j over the group. int8 uses a_j = max |x_j| (SmoothQuant); int4 uses a_j =
mean |x_j| (AWQ). alpha is searched per group and layer on the calibration data, over ALPHAS, for the smallest
output error of the group quantized as the scheme will run it (int8: per-token activations x rowwise weights; int4:
NF4 blocks, fp activations); alpha 0 with s = 1 is a candidate, so a group never gets worse than plain rounding.

int4 then rounds its weights with GPTQ (`edgeprm.quant.gptq`, `QuantConfig.rounding="gptq"`, the default): each
decoder Linear's smoothed weight is rounded to NF4 column by column against the Hessian of its smoothed inputs in the
same pass, and loading and `edgeprm quantize` take those codes instead of rounding to nearest. On the demo PRM's
held-out set that moves decisive Best-of-4 agreement with fp32 from 0.935 to 0.984-1.000 (bench/QUANT.md). The
Hessians are those of the full-precision model's activations, not of the already quantized earlier layers.

The statistics come from running calibration trajectories (rows in the `score` schema; a built-in set of synthetic
problems when none are given) through the model one decoder layer at a time, each layer's weights read from disk
only while it runs: peak memory is one full-precision layer plus the calibration activations, never the model.

Written here rather than taken from a library, measured: torchao's GPTQ/AWQ prototypes need the `mslk` kernels for
int4 (`pip` has only an empty 0.0.0 of it) and produce torchao's own tensor layouts; llm-compressor downgrades
transformers (5.24 -> 5.17); GPTQModel pulls a CUDA build of torch 2.14.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgeprm.loading import ASSETS, cache_dir
from edgeprm.quant.config import ROUNDINGS

ALPHAS = (0.0, 0.25, 0.5, 0.65, 0.8)
SAMPLE_TOKENS = 512  # activation rows kept per group for the alpha search
DEFAULT_ROWS = 16  # built-in calibration set: synthetic problems of the demo generator
BUILTIN = ASSETS / "calibration.jsonl"
SENSITIVE_RATIO = 3.0  # a group this many times the median group's error stays at full precision...
SENSITIVE_BUDGET = 0.10  # ...within this share of the Linear weights
GRIDS = ("nf4", "matmulnbits")  # the 4-bit grids GPTQ rounds to: the torch backend's NF4, the ONNX bundles' int4
# projection group: (the module whose input is observed, the tensors it feeds, what produces the activation)
GROUPS = {
    "attn": ("self_attn.q_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "input_layernorm"),
    "mlp": ("mlp.gate_proj", ("mlp.gate_proj", "mlp.up_proj"), "post_attention_layernorm"),
    "down": ("mlp.down_proj", ("mlp.down_proj",), "mlp.up_proj"),
}
# every Linear input of a decoder layer: (the module observed, the Linear layers it feeds, its smoothing group)
INPUTS = tuple((obs, consumers, g) for g, (obs, consumers, _) in GROUPS.items()) + (
    ("self_attn.o_proj", ("self_attn.o_proj",), None),)


def builtin_rows(n: int = DEFAULT_ROWS) -> list[dict]:
    """The default calibration set: the first `n` of the bundled synthetic arithmetic trajectories
    (assets/calibration.jsonl, made by the demo generator with a seed none of its held-out sets use)."""
    from edgeprm.rows import read_jsonl

    return read_jsonl(BUILTIN)[:n]


def read_rows(path: str | Path | None, n: int = DEFAULT_ROWS) -> tuple[list[dict], dict]:
    """Calibration rows and their record for a manifest (source, count, sha256 of the file)."""
    if path is None:
        rows = builtin_rows(n)
        return rows, {"source": "built-in synthetic problems", "rows": len(rows)}
    from edgeprm.rows import read_jsonl

    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no calibration rows (rows in the `score` schema: problem + steps or solution)")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return rows, {"source": str(path), "rows": len(rows), "sha256": digest}


@dataclass(frozen=True)
class Smoothing:
    """Per-layer channel factors and how they fold into the checkpoint's tensors (names without the 'model.' prefix).

    factors: {"layers.{i}.attn" | ".mlp" | ".down": s}, fp32 vectors over the group's input channels.
    rounded: int4 with GPTQ rounding: {Linear name ("layers.{i}.mlp.up_proj"): its smoothed weight rounded to `grid`
        in that grid's stored form}, which loading, `edgeprm quantize` and `edgeprm export` take instead of rounding to
        nearest. grid "nf4": bitsandbytes' NF4 (edgeprm.quant.gptq.nf4_stored); "matmulnbits": onnxruntime's
        symmetric int4 (edgeprm.quant.gptq.matmul_nbits_stored).
    """

    factors: dict[str, torch.Tensor]
    alphas: dict[str, float]
    scheme: str
    record: dict = field(default_factory=dict)
    errors: dict[str, tuple[float, int]] = field(default_factory=dict)  # group: (relative output error, weights)
    rounded: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    blocksize: int = 64  # the 4-bit blocks of `rounded`
    grid: str = "nf4"  # what `rounded` holds: one of GRIDS

    def stored(self, name: str, storage: str, blocksize: int) -> dict[str, torch.Tensor] | None:
        """The calibrated stored form of Linear `name` for `storage` ("int8" | "nf4" | "matmulnbits") in blocks of
        `blocksize`, if calibration rounded it so (None: round it at quantization time)."""
        return self.rounded.get(name) if storage == self.grid and blocksize == self.blocksize else None

    def sensitive(self, ratio: float | None = None, budget: float | None = None) -> tuple[str, ...]:
        """Linear names to keep at full precision: the groups whose quantized output error exceeds `ratio` x the
        median group's, worst first, within `budget` (a share of all the groups' weights). Mixed precision by
        measured sensitivity: one early down_proj can carry several times the error of every other group."""
        if not self.errors:
            return ()
        ratio = SENSITIVE_RATIO if ratio is None else ratio
        budget = SENSITIVE_BUDGET if budget is None else budget
        errs = sorted(e for e, _ in self.errors.values())
        median, total = errs[len(errs) // 2], sum(n for _, n in self.errors.values())
        kept, used = [], 0
        for group, (err, n) in sorted(self.errors.items(), key=lambda kv: -kv[1][0]):
            if err <= ratio * median or used + n > budget * total:
                break
            layer, _, name = group.rpartition(".")
            kept += [f"{layer}.{c}" for c in GROUPS[name][1]]
            used += n
        return tuple(kept)

    def apply(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """The tensor `name` of the smoothed model (unchanged for tensors the factors do not touch)."""
        parts = name.split(".")
        if len(parts) < 4 or parts[0] != "layers":
            return t
        layer, rest = f"layers.{parts[1]}", ".".join(parts[2:-1])
        out = t
        for group, (_, consumers, producer) in GROUPS.items():
            s = self.factors.get(f"{layer}.{group}")
            if s is None:
                continue
            if rest in consumers and parts[-1] == "weight":
                out = out.float() * s[None, :]
            if rest == producer and parts[-1] == "weight":
                out = out.float() / (s if out.dim() == 1 else s[:, None])
        return out.to(t.dtype) if out is not t else t

    def to_record(self) -> dict:
        alphas = list(self.alphas.values())
        return {**self.record, "method": "smoothquant (max |x|)" if self.scheme == "int8" else "awq (mean |x|)",
                "rounding": "gptq" if self.rounded else "nearest", **({"grid": self.grid} if self.rounded else {}),
                "full_precision": list(self.sensitive()),
                "alpha_grid": list(ALPHAS), "alpha_mean": round(sum(alphas) / max(len(alphas), 1), 3),
                "groups_scaled": sum(a > 0 for a in alphas), "groups": len(alphas)}


class SmoothedCheckpoint:
    """A view of a `SafetensorsCheckpoint` whose tensors come out smoothed (what loading and quantizing read)."""

    def __init__(self, weights, smoothing: Smoothing):
        self._w, self.smoothing = weights, smoothing
        self.model_dir, self.key_to_file = weights.model_dir, weights.key_to_file

    def __contains__(self, key):
        return key in self._w

    def __bool__(self):
        return bool(self._w)

    def keys(self):
        return self._w.keys()

    def files(self):
        return self._w.files()

    @property
    def backbone_prefix(self) -> str:
        return self._w.backbone_prefix

    def get(self, key: str, rows=None):
        p = self.backbone_prefix
        t = self._w.get(key)
        if key.startswith(p):
            t = self.smoothing.apply(key[len(p):], t)
        return t if rows is None else torch.stack([t[r] for r in rows])


# -- fake quantization: what the scheme's kernels compute -----------------------------------------------------------
def _fake_int8(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    xs = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    ws = w.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    return (torch.round(x / xs) * xs) @ (torch.round(w / ws) * ws).T


def _fake_nf4(x: torch.Tensor, w: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    from edgeprm.quant.primitives import dequantize_nf4, quantize_nf4

    packed, state = quantize_nf4(w, blocksize)
    return x @ dequantize_nf4(packed, state).float().T


def _fake_int4(x: torch.Tensor, w: torch.Tensor, blocksize: int = 32) -> torch.Tensor:
    """MatMulNBits' symmetric int4 rounded to nearest: per block along K, scale = signed max / -8, q in [-8, 7]."""
    b = w.float().reshape(w.shape[0], -1, blocksize)
    scale = b.gather(2, b.abs().argmax(2, keepdim=True)) / -8
    safe = torch.where(scale != 0, scale, torch.ones_like(scale))
    return x @ ((torch.round(b / safe).clamp(-8, 7) * scale).reshape(w.shape)).T


def search(x: torch.Tensor, weights: list[torch.Tensor], scheme: str, alphas=ALPHAS, grid: str = "nf4",
           blocksize: int = 64) -> tuple[torch.Tensor, float, float]:
    """(s, alpha, relative error) minimising the group's quantized output error on activation rows x [N, K]; the
    error is the mean squared output error over the mean squared output. int4 is rounded on `grid` in blocks of
    `blocksize` (a K that MatMulNBits' blocks do not divide is measured on NF4's)."""
    w = torch.cat(weights).float()
    ref = x @ w.T
    a = x.abs().amax(0) if scheme == "int8" else x.abs().mean(0)
    wmax = w.abs().amax(0).clamp_min(1e-8)
    if scheme == "int8":
        fake = _fake_int8
    elif grid == "matmulnbits" and x.shape[1] % blocksize == 0:
        def fake(a, b):
            return _fake_int4(a, b, blocksize)
    else:  # NF4's blocks run over the flattened weight, whatever K is
        def fake(a, b):
            return _fake_nf4(a, b, blocksize if grid == "nf4" else 64)
    best = (None, float("inf"), 0.0)
    for alpha in alphas:
        s = torch.ones_like(a) if alpha == 0 else (a.clamp_min(1e-8) ** alpha / wmax ** (1 - alpha))
        s = (s / s[s > 0].median()).clamp(1e-4, 1e4)  # the overall scale is free: keep factors around 1
        err = (fake(x / s, w * s[None, :]) - ref).pow(2).mean().item()
        if err < best[1]:
            best = (s, err, alpha)
    return best[0], best[2], best[1] / max(ref.pow(2).mean().item(), 1e-30)


# -- the layer-by-layer stream -------------------------------------------------------------------------------------
def _recorder(store: list):
    """A forward pre-hook that keeps the module's input rows [tokens, features]."""

    def hook(module, args):
        store.append(args[0].reshape(-1, args[0].shape[-1]).detach())

    return hook


class _Caught(Exception):
    pass


class _Catcher(torch.nn.Module):
    def forward(self, hidden, **kwargs):
        raise _Caught(hidden, kwargs)


def calibrate(model_dir: str | Path, rows: list[dict], scheme: str, record: dict | None = None,
              max_tokens: int = 512, progress: bool = True, rounding: str = "gptq", smooth: bool = True,
              blocksize: int = 64, grid: str = "nf4") -> Smoothing:
    """Channel factors for `scheme` ("int8" | "int4") of the checkpoint at `model_dir` from calibration `rows`; for
    int4 with rounding="gptq", also every decoder Linear's 4-bit weights on `grid` (GRIDS) in blocks of
    `blocksize`, rounded against its inputs' Hessian (`edgeprm.quant.gptq`). smooth=False leaves the factors at 1
    (GPTQ rounding alone)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}; got {rounding!r}")
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}; got {grid!r}")
    gptq = scheme == "int4" and rounding == "gptq"
    from transformers import AutoModel

    from edgeprm.loading import SafetensorsCheckpoint, build_backbone_config, read_config

    t0 = time.perf_counter()
    model_dir = Path(model_dir)
    config, weights = read_config(model_dir), SafetensorsCheckpoint(model_dir)
    p = weights.backbone_prefix
    # Encoding only (the family's recipe): the tokenizer and positions of a scorer, without its backbone weights.
    from edgeprm.encoding import Encoder

    encoder = Encoder.from_checkpoint(model_dir)
    seqs = []
    for i, row in enumerate(rows):
        try:
            ids = list(encoder.encode(_trajectory(row, encoder.split), truncate=True).ids)[:max_tokens]
        except ValueError as e:
            raise ValueError(f"calibration row {i}: {e}") from None
        seqs.append(ids)
    cfg = build_backbone_config(config)
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        meta = AutoModel.from_config(cfg)
    meta.rotary_emb = type(meta.rotary_emb)(config=cfg)
    layers, meta.layers = meta.layers, torch.nn.ModuleList([_Catcher()])
    embed = weights.get(p + "embed_tokens.weight")
    states, kwargs_of = [], []
    for ids in seqs:
        try:
            meta(inputs_embeds=embed[torch.tensor([ids])].float(), use_cache=False)
        except _Caught as c:
            states.append(c.args[0])
            kwargs_of.append(c.args[1])
    del embed
    factors, alphas, errors, rounded = {}, {}, {}, {}
    from tqdm.auto import tqdm

    from edgeprm.quant.gptq import Hessian, matmul_nbits_stored, nf4_stored

    round_to = nf4_stored if grid == "nf4" else matmul_nbits_stored

    for i in tqdm(range(len(layers)), desc="calibrating", unit="layer", disable=not progress):
        layer = type(layers[i])(cfg, i)
        prefix = f"{p}layers.{i}."
        layer.load_state_dict({k[len(prefix):]: weights.get(k).float() for k in weights.keys()
                               if k.startswith(prefix)})
        layer.eval()
        seen: dict[str, list[torch.Tensor]] = {g: [] for g in GROUPS}
        hooks = [layer.get_submodule(obs).register_forward_pre_hook(_recorder(seen[g]))
                 for g, (obs, _, _) in GROUPS.items()]
        hessians = {obs: Hessian(layer.get_submodule(obs).in_features) for obs, _, _ in INPUTS} if gptq else {}
        hooks += [layer.get_submodule(obs).register_forward_pre_hook(lambda m, args, h=h: h.add(args[0]))
                  for obs, h in hessians.items()]
        with torch.inference_mode():
            states = [layer(h, **kw) for h, kw in zip(states, kwargs_of)]
            states = [s[0] if isinstance(s, tuple) else s for s in states]
        for h in hooks:
            h.remove()
        for g, (_, consumers, _) in GROUPS.items():
            x = torch.cat(seen[g])
            if x.shape[0] > SAMPLE_TOKENS:
                x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(i))[:SAMPLE_TOKENS]]
            weights_g = [layer.get_submodule(c).weight.detach() for c in consumers]
            s, alpha, err = search(x.float(), weights_g, scheme, alphas=ALPHAS if smooth else (0.0,), grid=grid,
                                   blocksize=blocksize)
            factors[f"layers.{i}.{g}"], alphas[f"layers.{i}.{g}"] = s, alpha
            errors[f"layers.{i}.{g}"] = (err, sum(w.numel() for w in weights_g))
        if gptq:
            # The smoothed layer's weights, rounded against the Hessian of their (smoothed) inputs x / s
            local = Smoothing({k: v for k, v in factors.items() if k.startswith(f"layers.{i}.")}, {}, scheme)
            for obs, consumers, g in INPUTS:
                h = hessians.pop(obs).scaled(factors.get(f"layers.{i}.{g}"))
                if h.shape[0] % blocksize:
                    continue  # NF4 blocks run across rows there, int4 pads the last one: rounded to nearest later
                for c in consumers:
                    name = f"layers.{i}.{c}"
                    w = local.apply(name + ".weight", layer.get_submodule(c).weight.detach())
                    rounded[name] = round_to(w, h, blocksize)
                del h
        del layer
    rec = {**(record or {}), "tokens": sum(len(s) for s in seqs), "seconds": round(time.perf_counter() - t0, 1)}
    return Smoothing(factors, alphas, scheme, rec, errors, rounded, blocksize, grid)


def _trajectory(row, split):
    from edgeprm.trajectory import as_trajectory

    return as_trajectory(row, split)


def cached_calibration(model_dir: str | Path, scheme: str, calibration: str | None = None, *, smooth: bool = True,
                       rounding: str = "nearest", blocksize: int = 64, grid: str = "nf4") -> Smoothing:
    """`calibrate` once per checkpoint, scheme, calibration file and options; later loads read the result back from
    `$EDGEPRM_CACHE/calibration/` (a few vectors per layer, and with GPTQ rounding the 4-bit weights, memory-mapped)."""
    import os

    rows, record = read_rows(calibration)
    model_dir = Path(model_dir)
    gptq = scheme == "int4" and rounding == "gptq"
    key = hashlib.sha256(json.dumps([4, str(model_dir.resolve()), scheme, record, list(ALPHAS) if smooth else [0],
                                     [grid, blocksize] if gptq else None, _fingerprint(model_dir)],
                                    sort_keys=True).encode()).hexdigest()[:24]
    root = cache_dir() / "calibration"
    path = root / f"{key}.pt"
    if path.is_file():
        d = torch.load(path, weights_only=True, mmap=True)
        errors = {k: tuple(v) for k, v in json.loads(d.get("errors", "{}")).items()}
        return Smoothing(d["factors"], d["alphas"], d["scheme"], json.loads(d["record"]), errors,
                         d.get("rounded", {}), d.get("blocksize", blocksize), d.get("grid", grid))
    smoothing = calibrate(model_dir, rows, scheme, record, rounding="gptq" if gptq else "nearest", smooth=smooth,
                          blocksize=blocksize, grid=grid)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"factors": smoothing.factors, "alphas": smoothing.alphas, "scheme": smoothing.scheme,
                    "record": json.dumps(smoothing.record), "errors": json.dumps(smoothing.errors),
                    "rounded": smoothing.rounded, "blocksize": smoothing.blocksize, "grid": smoothing.grid}, tmp)
        os.replace(tmp, path)
    except OSError:
        pass
    return smoothing


def for_config(model_dir: str | Path, cfg) -> Smoothing:
    """The calibration a `QuantConfig` loads with (`cached_calibration` with its options)."""
    return cached_calibration(model_dir, cfg.scheme, cfg.calibration, smooth=cfg.smooth, rounding=cfg.rounding,
                              blocksize=cfg.nf4_blocksize)


def _fingerprint(model_dir: Path) -> list:
    """Sizes and modification times of the checkpoint's weight files: a changed checkpoint is calibrated again."""
    return sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in model_dir.glob("*.safetensors"))
