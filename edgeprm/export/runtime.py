"""The torch-free ONNX Runtime backend: load a bundle written by `edgeprm export` and score with it.

This module imports onnxruntime, tokenizers and numpy (and jinja2, through `edgeprm.tokenizer`, for chat
templates) — never torch or transformers — so it runs on machines where only those are installed.

A bundle is one directory:
    edgeprm.json          format version, family, encoding spec, max length, default aggregation, quantization
                          scheme, the graph's file name and every file the bundle needs, versions that wrote it
    prm.fp32.onnx         the whole scorer in one graph (prm.int8.onnx, prm.int4.b32.onnx when quantized),
    prm.fp32.onnx.data    its weights as external data when the model is over 2 GB
    tokenizer.json, tokenizer_config.json (+ chat_template.jinja when the source checkpoint has one)

The graph computes backbone -> gather at the step positions -> reward head -> sigmoid/softmax:
    inputs   input_ids [B, T] int64, attention_mask [B, T] int64, step_positions [B, S] int64 (padded with 0),
             final_positions [B] int64
    outputs  step_rewards [B, S] float32 (padded slots hold the reward at position 0: ignored here),
             trajectory_reward [B] float32 (the head at final_positions)
Position ids are computed inside the graph from the mask (cumsum - 1, clamped at 0), as the torch scorer does, so
padding side and batch composition do not change results. The aggregation (mean/min/last/prod/reasonflux) runs
here in numpy (`edgeprm.scoring_base.aggregate`), so one graph serves every aggregation and alpha.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprm.encoding import SYSTEM_PROMPT, Encoded, Encoder
from edgeprm.families import (
    DEFAULT_AGGREGATION,
    FAMILIES,
    Family,
    TokenProbSpec,
    check_aggregation,
    parse_family,
)
from edgeprm.scoring_base import ScorerBase, aggregate, group_results
from edgeprm.tokenizer import PRMTokenizer
from edgeprm.trajectory import DEFAULT_SPLIT

FORMAT = "edgeprm-onnx"
FORMAT_VERSION = 1
BUNDLE_FILE = "edgeprm.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_TOKENIZER_FILES = ("chat_template.jinja",)
INPUT_NAMES = ("input_ids", "attention_mask", "step_positions", "final_positions")
OUTPUT_NAMES = ("step_rewards", "trajectory_reward")
# A bundle's quantization scheme; "none" keeps fp32 weights. `load(quantization=None)` takes the bundle's scheme.
SCHEMES = ("none", "int8", "int4")
DEVICES = ("auto", "cpu", "cuda")


def graph_file_name(scheme: str, block_size: int | None = None) -> str:
    """The graph's file name records its scheme: prm.fp32.onnx, prm.int8.onnx, prm.int4.b32.onnx."""
    if scheme not in SCHEMES:
        raise ValueError(f"quantization scheme must be one of {SCHEMES}; got {scheme!r}")
    if scheme == "none":
        return "prm.fp32.onnx"
    if scheme == "int4":
        return f"prm.int4.b{block_size}.onnx"
    return f"prm.{scheme}.onnx"


@dataclass(frozen=True)
class Bundle:
    """What edgeprm.json says about a bundle directory (checked by `read_bundle`)."""

    path: Path
    family: Family
    scheme: str
    graph: str
    files: tuple[str, ...]
    max_length: int
    default_aggregation: str
    system_prompt: str
    token_prob: TokenProbSpec | None
    meta: dict

    @property
    def quantization(self) -> str | None:
        """As `edgeprm.load` names it: None for fp32 weights."""
        return None if self.scheme == "none" else self.scheme


def read_bundle(model_dir: str | os.PathLike) -> Bundle:
    """Read and check a bundle's edgeprm.json and its files; errors say what is wrong and what to do."""
    path = Path(model_dir).expanduser()
    redo = f"re-export it with `edgeprm export MODEL {path}`"
    if not path.is_dir():
        raise FileNotFoundError(f"ONNX bundle directory {str(path)!r} does not exist; make one with "
                                f"`edgeprm export MODEL {path}`")
    meta_file = path / BUNDLE_FILE
    if not meta_file.is_file():
        hint = (" (it looks like a checkpoint: load it with backend='torch', or export it first)"
                if (path / "config.json").is_file() else "")
        raise FileNotFoundError(f"{path} is not an edgeprm ONNX bundle: it has no {BUNDLE_FILE}{hint}; make one with "
                                f"`edgeprm export MODEL {path}`")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_file} is not valid JSON ({e}); {redo}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} does not describe an {FORMAT!r} bundle; {redo}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{meta_file} has no valid format_version (got {version!r}); {redo}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} is a bundle of format version {version}, written by a newer edgeprm "
                         f"({meta.get('versions', {}).get('edgeprm', '?')}); this edgeprm reads format versions up to "
                         f"{FORMAT_VERSION}: upgrade edgeprm, or re-export the model with this version")
    missing_keys = [k for k in ("family", "quantization", "graph", "files", "encoding") if k not in meta]
    if missing_keys:
        raise ValueError(f"{meta_file} lacks {missing_keys}; {redo}")
    family = parse_family(meta["family"], f"{meta_file} 'family'")
    scheme = meta["quantization"].get("scheme") if isinstance(meta["quantization"], dict) else None
    if scheme not in SCHEMES:
        raise ValueError(f"{meta_file} names quantization scheme {scheme!r}, not one of {SCHEMES}; {redo}")
    files = tuple(meta["files"])
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"bundle {path} is missing {missing} (listed in {BUNDLE_FILE}); copy the whole bundle "
                                f"directory, or {redo}")
    enc = meta["encoding"]
    spec = enc.get("token_prob")
    return Bundle(path=path, family=family, scheme=scheme, graph=meta["graph"], files=files,
                  max_length=int(enc["max_length"]), default_aggregation=check_aggregation(meta.get(
                      "default_aggregation", DEFAULT_AGGREGATION[family])),
                  system_prompt=enc.get("system_prompt", SYSTEM_PROMPT),
                  token_prob=TokenProbSpec(**spec) if spec else None, meta=meta)


def select_providers(device: str) -> list:
    """onnxruntime execution providers for a device: CUDA when asked for (or 'auto' and onnxruntime-gpu is
    installed), else CPU."""
    import onnxruntime as ort

    kind, _, index = str(device).partition(":")
    if kind not in DEVICES or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'); got {device!r}")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if kind == "cuda" and not has_cuda:
        raise ValueError("device='cuda' was asked for but this onnxruntime has no CUDA provider; install "
                         "onnxruntime-gpu in place of onnxruntime (never both), or use device='cpu'")
    if kind == "cuda" or (kind == "auto" and has_cuda):
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxScorer(ScorerBase):
    """Scores trajectories with an exported bundle on ONNX Runtime; same API as the torch `Scorer`.

    Build it with `edgeprm.load(bundle_dir, backend="onnx")`.
    """

    def __init__(self, session, bundle: Bundle, encoder: Encoder, aggregation: str, alpha: float = 1.0,
                 token_budget: int = 8192, max_batch_size: int = 32, padding_side: str = "right",
                 truncate: bool = False, pad_id: int = 0):
        super().__init__(encoder, bundle.family, aggregation, alpha, token_budget, max_batch_size, padding_side,
                         truncate, pad_id, bundle.path, bundle.quantization)
        self.session, self.bundle = session, bundle

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def rewards(self, input_ids: np.ndarray, attention_mask: np.ndarray, step_positions: np.ndarray,
                final_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph: int64 [B, T], [B, T], [B, S], [B] -> step_rewards [B, S], trajectory_reward [B] (fp32)."""
        feeds = dict(zip(INPUT_NAMES, (input_ids, attention_mask, step_positions, final_positions)))
        steps, traj = self.session.run(list(OUTPUT_NAMES), feeds)
        return steps, traj

    def _score_group(self, group: Sequence[Encoded]) -> list[dict]:
        batch = self.pad(group)
        counts = [len(row) for row in batch.step_positions]
        step_positions = np.zeros((len(group), max(1, *counts)), dtype=np.int64)  # S >= 1 keeps the axis non-empty
        for k, row in enumerate(batch.step_positions):
            step_positions[k, : len(row)] = row
        steps, traj = self.rewards(batch.input_ids, batch.attention_mask, step_positions,
                                   np.asarray(batch.final_positions, dtype=np.int64))
        step_lists = [steps[k, :n] for k, n in enumerate(counts)]
        scores = aggregate(step_lists, traj, self.aggregation, self.alpha)
        return group_results(group, step_lists, traj.tolist(), scores)


def load_onnx(model_dir, quantization=None, device="auto", threads=None, family=None, aggregation=None, alpha=1.0,
              max_length=None, truncate=False, split=DEFAULT_SPLIT, token_budget=8192, max_batch_size=32,
              padding_side="right", **ignored) -> OnnxScorer:
    """Load an exported bundle directory and return its `OnnxScorer`.

    quantization: None takes the bundle's scheme; "none" | "int8" | "int4" must match it. family: when given, must
    match the bundle's. threads: onnxruntime intra-op threads (None = its default, one per core). Options that only
    the torch backend has (dtype, revision, ...) are accepted and ignored, so one `edgeprm.load` call works for both;
    token-prob options (step_tag, good_token, bad_token) must match what the graph was exported with.
    """
    import onnxruntime as ort

    if model_dir is None:
        raise ValueError("backend='onnx' needs an exported bundle directory; make one with "
                         "`edgeprm export MODEL OUT_DIR`")
    bundle = read_bundle(model_dir)
    if quantization is not None:
        if quantization not in SCHEMES:
            raise ValueError(f"quantization must be None or one of {SCHEMES}; got {quantization!r}")
        if quantization != bundle.scheme:
            raise ValueError(f"bundle {bundle.path} holds {bundle.scheme!r} weights ({bundle.graph}), not "
                             f"{quantization!r}; pass quantization={bundle.quantization!r} (or None), or export the "
                             f"model with `edgeprm export MODEL OUT_DIR --quantization {quantization}`")
    if family is not None and parse_family(family) is not bundle.family:
        raise ValueError(f"bundle {bundle.path} was exported as a {bundle.family.value!r} PRM, not {family!r}; "
                         f"drop family= or re-export with `edgeprm export MODEL OUT_DIR --family {family}` "
                         f"(families: {FAMILIES})")
    for key in ("step_tag", "good_token", "bad_token"):
        value = ignored.get(key)
        have = getattr(bundle.token_prob, key, None)
        if value is not None and value != have:
            raise ValueError(f"{key}={value!r} differs from the bundle's {have!r}: the reward head is baked into the "
                             "graph; re-export the model with the token-prob options you want")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None; got {threads!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be positive; got {max_length}")
    providers = select_providers(device)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise to a user
    session = ort.InferenceSession(str(bundle.path / bundle.graph), sess_options=options, providers=providers)
    if str(device).startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
        raise ValueError("device='cuda' was asked for but onnxruntime could not start its CUDA provider (no GPU, or "
                         "a CUDA/cuDNN mismatch); use device='cpu'")
    tokenizer = PRMTokenizer.from_dir(bundle.path)
    encoder = Encoder(bundle.family, tokenizer, max_length or bundle.max_length, split, bundle.token_prob,
                      bundle.system_prompt)
    return OnnxScorer(session, bundle, encoder, aggregation or bundle.default_aggregation, alpha, token_budget,
                      max_batch_size, padding_side, truncate, tokenizer.pad_token_id)
