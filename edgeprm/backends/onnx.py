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
here in numpy (`edgeprm.aggregation.aggregate`), so one graph serves every aggregation and alpha. What the ONNX
backend does not do yet: quantize on load (export a quantized bundle instead) and choose a compute dtype.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprm.aggregation import aggregate, check_aggregation
from edgeprm.backends.base import ScorerBase, group_results
from edgeprm.config import BUNDLE_SCHEMES, DEVICES, ScorerConfig
from edgeprm.encoding import Encoded, Encoder
from edgeprm.families import FAMILIES, Family, get_family, parse_family
from edgeprm.tokenizer import PRMTokenizer

BUNDLE_FORMAT = "edgeprm-onnx"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_FILE = "edgeprm.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_TOKENIZER_FILES = ("chat_template.jinja",)
INPUT_NAMES = ("input_ids", "attention_mask", "step_positions", "final_positions")
OUTPUT_NAMES = ("step_rewards", "trajectory_reward")
GRAPH_CONTRACT = {
    "inputs": {"input_ids": "[B, T] int64", "attention_mask": "[B, T] int64",
               "step_positions": "[B, S] int64, padded with 0 (padded slots are ignored)",
               "final_positions": "[B] int64"},
    "outputs": {"step_rewards": "[B, S] float32", "trajectory_reward": "[B] float32"},
    "aggregation": "done by the runtime from the outputs (mean, min, last, prod, reasonflux)",
}


def graph_file_name(scheme: str, block_size: int | None = None) -> str:
    """The graph's file name records its scheme: prm.fp32.onnx, prm.int8.onnx, prm.int4.b32.onnx."""
    if scheme not in BUNDLE_SCHEMES:
        raise ValueError(f"quantization scheme must be one of {BUNDLE_SCHEMES}; got {scheme!r}")
    if scheme == "none":
        return "prm.fp32.onnx"
    if scheme == "int4":
        return f"prm.int4.b{block_size}.onnx"
    return f"prm.{scheme}.onnx"


@dataclass(frozen=True)
class BundleManifest:
    """A bundle's edgeprm.json: what the graph computes and what the bundle holds. Writes and reads itself
    (`write`, `read`), checking the format version; `edgeprm export` writes it last, so its presence marks a
    complete bundle."""

    family: str
    graph: str
    files: tuple[str, ...]
    quantization: dict  # {"scheme": "none" | "int8" | "int4", ...how it was quantized}
    encoding: dict  # {"max_length", ...the family's encoding record}
    default_aggregation: str
    head: dict = field(default_factory=dict)
    source: str = ""
    versions: dict = field(default_factory=dict)
    format_version: int = BUNDLE_FORMAT_VERSION

    def __post_init__(self):
        object.__setattr__(self, "family", parse_family(self.family, "'family'").value)
        object.__setattr__(self, "files", tuple(self.files))
        scheme = self.quantization.get("scheme") if isinstance(self.quantization, dict) else None
        if scheme not in BUNDLE_SCHEMES:
            raise ValueError(f"quantization scheme {scheme!r} is not one of {BUNDLE_SCHEMES}")
        check_aggregation(self.default_aggregation)
        if not isinstance(self.encoding.get("max_length"), int):
            raise ValueError(f"encoding has no integer max_length (got {self.encoding.get('max_length')!r})")

    @property
    def scheme(self) -> str:
        return self.quantization["scheme"]

    def to_dict(self) -> dict:
        return {"format": BUNDLE_FORMAT, "format_version": self.format_version, "family": self.family,
                "encoding": self.encoding, "default_aggregation": self.default_aggregation, "head": self.head,
                **GRAPH_CONTRACT, "source": self.source, "graph": self.graph, "files": list(self.files),
                "quantization": self.quantization, "versions": self.versions}

    def write(self, out_dir: Path) -> Path:
        """Write edgeprm.json into `out_dir` atomically (a reader never sees half a manifest)."""
        tmp = Path(out_dir) / (BUNDLE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, Path(out_dir) / BUNDLE_FILE)
        return Path(out_dir) / BUNDLE_FILE

    @classmethod
    def read(cls, path: Path) -> BundleManifest:
        """Read and check the edgeprm.json of bundle directory `path`; errors say what is wrong and what to do."""
        redo = f"re-export it with `edgeprm export MODEL {path}`"
        meta_file = path / BUNDLE_FILE
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_file} is not valid JSON ({e}); {redo}") from e
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{meta_file} does not describe an {BUNDLE_FORMAT!r} bundle; {redo}")
        version = meta.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"{meta_file} has no valid format_version (got {version!r}); {redo}")
        if version > BUNDLE_FORMAT_VERSION:
            raise ValueError(f"{path} is a bundle of format version {version}, written by a newer edgeprm "
                             f"({meta.get('versions', {}).get('edgeprm', '?')}); this edgeprm reads format versions "
                             f"up to {BUNDLE_FORMAT_VERSION}: upgrade edgeprm, or re-export the model with this "
                             "version")
        missing_keys = [k for k in ("family", "quantization", "graph", "files", "encoding") if k not in meta]
        if missing_keys:
            raise ValueError(f"{meta_file} lacks {missing_keys}; {redo}")
        known = set(cls.__dataclass_fields__)
        fields_ = {k: v for k, v in meta.items() if k in known}
        try:
            if "default_aggregation" not in fields_:
                fields_["default_aggregation"] = get_family(meta["family"]).default_aggregation
            return cls(**fields_)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{meta_file}: {e}; {redo}") from None


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its checked manifest (`read_bundle`)."""

    path: Path
    manifest: BundleManifest

    @property
    def family(self) -> Family:
        return Family(self.manifest.family)

    @property
    def scheme(self) -> str:
        return self.manifest.scheme

    @property
    def graph(self) -> str:
        return self.manifest.graph

    @property
    def files(self) -> tuple[str, ...]:
        return self.manifest.files

    @property
    def max_length(self) -> int:
        return self.manifest.encoding["max_length"]

    @property
    def quantization(self) -> str | None:
        """As `edgeprm.load` names it: None for fp32 weights."""
        return None if self.scheme == "none" else self.scheme

    @property
    def options(self):
        """The family's encoding options the graph was exported with."""
        return get_family(self.family).options_from_record(self.manifest.encoding)


def read_bundle(model_dir: str | os.PathLike) -> Bundle:
    """Read and check a bundle directory: its edgeprm.json and the files it lists."""
    path = Path(model_dir).expanduser()
    redo = f"re-export it with `edgeprm export MODEL {path}`"
    if not path.is_dir():
        raise FileNotFoundError(f"ONNX bundle directory {str(path)!r} does not exist; make one with "
                                f"`edgeprm export MODEL {path}`")
    if not (path / BUNDLE_FILE).is_file():
        hint = (" (it looks like a checkpoint: load it with backend='torch', or export it first)"
                if (path / "config.json").is_file() else "")
        raise FileNotFoundError(f"{path} is not an edgeprm ONNX bundle: it has no {BUNDLE_FILE}{hint}; make one with "
                                f"`edgeprm export MODEL {path}`")
    manifest = BundleManifest.read(path)
    missing = [f for f in manifest.files if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"bundle {path} is missing {missing} (listed in {BUNDLE_FILE}); copy the whole bundle "
                                f"directory, or {redo}")
    return Bundle(path, manifest)


def select_providers(device: str) -> list:
    """onnxruntime execution providers for a device: CUDA when asked for (or 'auto' and onnxruntime-gpu is
    installed), else CPU."""
    import onnxruntime as ort

    kind, _, index = str(device).partition(":")
    if kind not in DEVICES or (index and not (kind == "cuda" and index.isdigit())):  # ScorerConfig checked it too
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

    def __init__(self, session, bundle: Bundle, encoder: Encoder, config: ScorerConfig, pad_id: int = 0):
        super().__init__(encoder, config, bundle.path, bundle.quantization, pad_id)
        self.ort_session, self.bundle = session, bundle

    @property
    def providers(self) -> list[str]:
        return self.ort_session.get_providers()

    def rewards(self, input_ids: np.ndarray, attention_mask: np.ndarray, step_positions: np.ndarray,
                final_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph: int64 [B, T], [B, T], [B, S], [B] -> step_rewards [B, S], trajectory_reward [B] (fp32)."""
        feeds = dict(zip(INPUT_NAMES, (input_ids, attention_mask, step_positions, final_positions)))
        steps, traj = self.ort_session.run(list(OUTPUT_NAMES), feeds)
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


def load(model_dir, config: ScorerConfig) -> OnnxScorer:
    """Load an exported bundle directory for the ONNX Runtime backend and return its `OnnxScorer`.

    config.quantization: None takes the bundle's scheme; "none" | "int8" | "int4" must match it. config.family: when
    given, must match the bundle's; the family's options (step_tag, good_token, bad_token) must match what the graph
    was exported with. config.threads: onnxruntime intra-op threads (None = its default, one per core).
    """
    import onnxruntime as ort

    if model_dir is None:
        raise ValueError("backend='onnx' needs an exported bundle directory; make one with "
                         "`edgeprm export MODEL OUT_DIR`")
    bundle = read_bundle(model_dir)
    quantization = config.quantization
    if quantization is not None and quantization != bundle.scheme:
        raise ValueError(f"bundle {bundle.path} holds {bundle.scheme!r} weights ({bundle.graph}), not "
                         f"{quantization!r}; pass quantization={bundle.quantization!r} (or None), or export the "
                         f"model with `edgeprm export MODEL OUT_DIR --quantization {quantization}`")
    family = config.family
    if family is not None and parse_family(family) is not bundle.family:
        raise ValueError(f"bundle {bundle.path} was exported as a {bundle.family.value!r} PRM, not {family!r}; "
                         f"drop family= or re-export with `edgeprm export MODEL OUT_DIR --family {family}` "
                         f"(families: {FAMILIES})")
    fam = get_family(bundle.family)
    options = bundle.options
    for key, value in config.family_options(fam).items():
        have = getattr(options, key, None)
        if value != have:
            raise ValueError(f"{key}={value!r} differs from the bundle's {have!r}: the reward head is baked into the "
                             "graph; re-export the model with the options you want")
    providers = select_providers(config.device)
    session_options = ort.SessionOptions()
    if config.threads is not None:
        session_options.intra_op_num_threads = config.threads
    session_options.log_severity_level = 3  # warnings about unused initializers etc. are noise to a user
    session = ort.InferenceSession(str(bundle.path / bundle.graph), sess_options=session_options,
                                   providers=providers)
    if config.device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
        raise ValueError("device='cuda' was asked for but onnxruntime could not start its CUDA provider (no GPU, or "
                         "a CUDA/cuDNN mismatch); use device='cpu'")
    tokenizer = PRMTokenizer.from_dir(bundle.path)
    encoder = Encoder(fam, tokenizer, config.max_length or bundle.max_length, config.split, options)
    resolved = config.replace(family=str(fam), max_length=encoder.max_length,
                              aggregation=config.aggregation or bundle.manifest.default_aggregation)
    return OnnxScorer(session, bundle, encoder, resolved, tokenizer.pad_token_id)


def load_onnx(model_dir, **options) -> OnnxScorer:
    """`edgeprm.load(model_dir, backend="onnx", **options)`, spelled for this backend."""
    return load(model_dir, ScorerConfig.from_options(backend="onnx", **options))
