"""Export a PRM checkpoint to a self-contained ONNX bundle: `edgeprm export MODEL OUT_DIR [--quantization ...]`.

One graph holds the whole scorer — backbone, gather at the step positions, reward head, sigmoid/softmax — traced
with `torch.onnx.export(dynamo=True)` from the same loader the torch backend uses (so the bundle scores exactly as
`edgeprm.load(MODEL)` does; the tests hold fp32 step rewards within 1e-4). Batch, sequence and step axes are
dynamic. The graph's inputs, outputs and the bundle layout are described in `edgeprm/backends/onnx.py`, which
reads what this module writes (`BundleManifest`).

Quantization happens on the exported fp32 graph with onnxruntime's own tools:
- int8: `MatMulNBitsQuantizer` with 8 bits — int8 weights in blocks of `block_size` along K, int8 activations per
  block at run time (accuracy level 4); `int8_method="dynamic"` takes `quantize_dynamic` instead (int8 weights per
  output channel, activations per tensor), which is less faithful (see DEFAULT_INT8_METHOD);
- int4: `MatMulNBitsQuantizer` — 4-bit weights in blocks of `block_size` along K, symmetric, with an
  `accuracy_level` for the compute (0 = unset, 1 = fp32, 2 = fp16, 3 = bf16, 4 = int8 activations). From a
  checkpoint with rounding="gptq" (the default), the decoder's 4-bit codes and scales are then replaced by the
  calibration's GPTQ rounding on the same grid (`edgeprm.quant.gptq.matmul_nbits_stored`), matched to the nodes by
  the module scope the exporter records.
MatMul with constant weights only: the attention products stay fp32.
Both leave the embedding Gather in fp32 and never touch the reward head: its MatMul nodes are found by their
module scope in the exported graph and excluded (quantizing a reward head is a known failure elsewhere).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeprm.backends.onnx import (
    BUNDLE_FILE,
    INPUT_NAMES,
    OPTIONAL_TOKENIZER_FILES,
    OUTPUT_NAMES,
    TOKENIZER_FILES,
    BundleManifest,
    graph_file_name,
    read_bundle,
)
from edgeprm.config import BUNDLE_SCHEMES
from edgeprm.kernels.step_head import StepHeadWeights, head_rewards_ref
from edgeprm.quant.config import ROUNDINGS

ACCURACY_LEVELS = (0, 1, 2, 3, 4)
# The int4 default, chosen by measured fidelity to fp32 (block 32; numbers in edgeprm/export/README.md):
# - tiny fixtures, 80 trajectories in 20 Best-of-4 groups per family: levels 0-3 give identical rewards (same 4-bit
#   weights, fp32 compute on CPU); level 4 (int8 activations) lowers top-1 agreement in two families of three
#   (value-head 0.95 -> 0.90, token-prob 0.90 -> 0.80) and Spearman slightly;
# - 4-layer slice of the 1.5B shape, 6 x 512-token trajectories vs torch fp32: levels 0 and 1 max |delta| 4.0e-3,
#   Spearman 1.0; level 4 max |delta| 4.2e-3 and Spearman 0.94 (one pair of trajectories swapped) for ~1.1-1.3x
#   speed on this CPU.
# Level 0 (unset: "A is neither quantized nor downcast") is the faithful choice; pass --accuracy-level 4 for speed
# after checking fidelity on your own data (`edgeprm parity`).
DEFAULT_ACCURACY_LEVEL = 0
# int8: MatMulNBits 8-bit blocks of 32 with int8 activations per block, against quantize_dynamic (one activation
# scale per tensor), measured on the demo PRM's 100 held-out Best-of-4 problems vs fp32 (bench/QUANT.md): mean step
# |delta| 1.16e-3 against quantize_dynamic's 9.35e-3 (bf16: 1.24e-3), decisive top-1 agreement 1.000 vs 0.968.
DEFAULT_INT8_METHOD = "nbits"
INT8_METHODS = ("nbits", "dynamic")
INT8_ACCURACY_LEVEL = 4
DEFAULT_BLOCK_SIZE = 32
# Weights go to an external data file above this size (protobuf's hard limit is 2 GiB for a whole file, but the reason
# here is memory): onnxruntime maps external initializers, while inline ones are parsed into the protobuf and copied
# again into the session. A 4-layer slice of the 1.5B shape (1.7 GB of fp32 weights) measured int4 at 0.65 GB peak
# RSS with external data against 1.91 GB inline, int8 at 0.78 GB against 1.99 GB.
EXTERNAL_DATA_BYTES = 64 * 2**20
HEAD_SCOPE = "reward_head"


@dataclass(frozen=True)
class ExportConfig:
    """How to export: quantization scheme ("none" | "int8" | "int4") and its options. accuracy_level=None takes the
    scheme's default (int4: DEFAULT_ACCURACY_LEVEL; int8 "nbits": 4, int8 activations)."""

    quantization: str = "none"
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int | None = None
    symmetric: bool = True
    int8_method: str = DEFAULT_INT8_METHOD
    smooth: bool = True  # calibrated channel smoothing before int8/int4 (edgeprm.quant.calibrate); needs a checkpoint
    calibration: str | None = None  # JSONL rows to calibrate on; None = the built-in set
    rounding: str = "gptq"  # int4 from a checkpoint: "gptq" (calibrated, edgeprm.quant.gptq) | "nearest"

    def __post_init__(self):
        if self.quantization is None:
            object.__setattr__(self, "quantization", "none")
        if self.quantization not in BUNDLE_SCHEMES:
            raise ValueError(f"quantization must be one of {BUNDLE_SCHEMES}; got {self.quantization!r}")
        b = self.block_size
        if not isinstance(b, int) or b < 16 or b & (b - 1):
            raise ValueError(f"block_size must be a power of two >= 16 (MatMulNBits' constraint); got {b!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}; got {self.rounding!r}")
        if self.int8_method not in INT8_METHODS:
            raise ValueError(f"int8_method must be one of {INT8_METHODS}; got {self.int8_method!r}")
        if self.accuracy_level is None:
            level = INT8_ACCURACY_LEVEL if self.quantization == "int8" else DEFAULT_ACCURACY_LEVEL
            object.__setattr__(self, "accuracy_level", level)
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(f"accuracy_level must be one of {ACCURACY_LEVELS}; got {self.accuracy_level!r}")

    @property
    def graph(self) -> str:
        return graph_file_name(self.quantization, self.block_size)

    @property
    def gptq(self) -> bool:
        return self.quantization == "int4" and self.rounding == "gptq"


class RewardHead(torch.nn.Module):
    """A `StepHeadWeights` head as a module, so that its MatMuls carry the `reward_head` scope in the graph: rows
    [..., H] -> rewards [...] fp32, computed by the kernel module's own reference (`head_rewards_ref`)."""

    def __init__(self, head: StepHeadWeights):
        super().__init__()
        for name in ("w1", "b1", "w2", "b2"):
            t = getattr(head, name)
            self.register_buffer(name, None if t is None else t.float().clone())

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return head_rewards_ref(rows, StepHeadWeights(self.w2, self.b2, self.w1, self.b1))


class PRMGraph(torch.nn.Module):
    """The whole scorer as one module: (input_ids, attention_mask, step_positions, final_positions) ->
    (step_rewards [B, S], trajectory_reward [B]); see `edgeprm.backends.onnx` for the contract."""

    def __init__(self, backbone, head: StepHeadWeights):
        super().__init__()
        self.backbone = backbone
        self.reward_head = RewardHead(head)
        assert HEAD_SCOPE == "reward_head"  # the attribute name is the scope quantization excludes

    def forward(self, input_ids, attention_mask, step_positions, final_positions):
        # Position ids from each row's own mask, exactly as Scorer.hidden_states: padding side never matters.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state
        # Gather the S step rows and the final row first, then run the head on S + 1 rows, never on all T.
        index = torch.cat([step_positions, final_positions[:, None]], dim=1)
        rows = torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        rewards = self.reward_head(rows)
        return rewards[:, :-1], rewards[:, -1]


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's and quantizers' chatter (per-node INFO lines, advice to pre-process, warnings about
    optional torchvision ops and axis renaming); errors still surface."""
    loggers = {name: logging.getLogger(name) for name in ("", "torch.onnx", "onnxruntime", "onnxscript")}
    levels = {name: lg.level for name, lg in loggers.items()}
    try:
        for lg in loggers.values():
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            yield
    finally:
        for name, lg in loggers.items():
            lg.setLevel(levels[name])


def _strip_trace_metadata(path: Path) -> None:
    """Drop the exporter's per-node stack traces and FX dumps (local file paths, most of a small graph's bytes);
    keep the module scopes that `head_matmul_nodes` reads. External weights are left where they are."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key not in ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(model, str(path))


def _example_inputs(vocab_size: int):
    # Batch 2 with one padded row, so that neither the batch nor the padding path is specialised away.
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (2, 16), generator=g)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 11:] = 0
    return input_ids, mask, torch.tensor([[3, 7, 15], [2, 5, 10]]), torch.tensor([15, 10])


def export_graph(scorer, path: str | os.PathLike, external_data: bool | None = None) -> list[Path]:
    """Trace `scorer` (a torch `Scorer` in fp32 on CPU) into one fp32 ONNX graph at `path`; returns the files
    written (the graph and, with external data, its weights file). external_data=None decides by size."""
    path = Path(path)
    module = PRMGraph(scorer.backbone, scorer.head).eval()
    if external_data is None:
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        external_data = size > EXTERNAL_DATA_BYTES
    dim = torch.export.Dim
    batch, seq, steps = dim("batch"), dim("sequence"), dim("steps")
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
               "step_positions": {0: batch, 1: steps}, "final_positions": {0: batch}}
    vocab = scorer.backbone.get_input_embeddings().num_embeddings
    before = set(path.parent.iterdir())
    with torch.no_grad(), _quiet():
        torch.onnx.export(module, _example_inputs(vocab), str(path), dynamo=True, input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, external_data=external_data,
                          verbose=False)
    _strip_trace_metadata(path)
    return sorted(set(path.parent.iterdir()) - before)


TRACE_CACHE_FORMAT = 1


def _code_digest() -> str:
    """A digest of edgeprm's own source: a cached trace is never served to code that would trace differently."""
    import hashlib

    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _trace_key(model_dir: Path, load_options: dict) -> str:
    import hashlib

    import onnx
    import transformers

    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in model_dir.iterdir() if f.is_file())
    parts = [TRACE_CACHE_FORMAT, str(model_dir.resolve()), files, sorted((k, str(v)) for k, v in load_options.items()),
             torch.__version__, onnx.__version__, transformers.__version__, _code_digest()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def trace_fp32(scorer, model_dir: Path, load_options: dict, path: Path, external: bool) -> None:
    """The plain (unsmoothed) fp32 graph of `scorer` at `path`. Tracing is most of an export's time (8 s for the
    4-layer demo PRM, 150 s at the 1.5B shape), and every scheme of one checkpoint starts from the same trace
    (smoothing is written into it afterwards, `smooth_graph`), so a graph with inline weights (small models) is
    kept in `$EDGEPRM_CACHE/traces/`, keyed by the checkpoint's files, the load options and the versions of the
    code that traced it. Graphs with external weights (above EXTERNAL_DATA_BYTES) are traced each time: caching
    them would store gigabytes per model. EDGEPRM_TRACE_CACHE=0 turns the cache off."""
    from edgeprm.loading import cache_dir

    if external or os.environ.get("EDGEPRM_TRACE_CACHE", "1") == "0":
        export_graph(scorer, path, external_data=external)
        return
    cached = cache_dir() / "traces" / _trace_key(model_dir, load_options) / path.name
    if cached.is_file():
        shutil.copyfile(cached, path)
        return
    export_graph(scorer, path, external_data=False)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the next export its trace


def smooth_graph(path: Path, model_dir: Path, smoothing) -> int:
    """Write the smoothed weights into the plain fp32 graph at `path` (inline or external weights); returns how
    many initializers changed. Each gets the tensor the torch loader builds from the smoothed checkpoint
    (`SmoothedCheckpoint`, rounded to the checkpoint's dtype, then float32; a Linear's MatMul holds it
    transposed), so the graph equals a trace of the smoothed model, bit for bit."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgeprm.loading import SafetensorsCheckpoint
    from edgeprm.quant.calibrate import GROUPS, SmoothedCheckpoint

    model = onnx.load(str(path), load_external_data=False)
    weights = SmoothedCheckpoint(SafetensorsCheckpoint(model_dir), smoothing)
    prefix = weights.backbone_prefix
    where = {i.name[len("backbone."):]: (i.name, False) for i in model.graph.initializer
             if i.name.startswith("backbone.")}
    where.update({f"{linear}.weight": (init, True) for init, linear in linear_weights(model).items()})
    touched = []
    for key in smoothing.factors:
        layer, _, group = key.rpartition(".")
        _, consumers, producer = GROUPS[group]
        touched += [f"{layer}.{m}.weight" for m in (producer, *consumers)]
    inits = {i.name: i for i in model.graph.initializer}
    inline = False
    for name in dict.fromkeys(touched):
        if name not in where:
            raise RuntimeError(f"the traced graph has no initializer for {name} (smoothing cannot be applied)")
        init_name, transposed = where[name]
        t = weights.get(prefix + name).float()
        arr = np.ascontiguousarray((t.T if transposed else t).numpy())
        init = inits[init_name]
        if tuple(init.dims) != arr.shape:
            raise RuntimeError(f"{init_name}: graph shape {tuple(init.dims)}, smoothed {name} {arr.shape}")
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            if int(info.get("length", arr.nbytes)) != arr.nbytes:
                raise RuntimeError(f"{init_name}: {info.get('length')} external bytes, expected {arr.nbytes}")
            with open(path.parent / info["location"], "r+b") as f:
                f.seek(int(info.get("offset", 0)))
                f.write(arr.astype("<f4", copy=False).tobytes())
        else:
            init.CopyFrom(numpy_helper.from_array(arr, init_name))
            inline = True
    if inline:
        onnx.save(model, str(path))
    return len(dict.fromkeys(touched))


def head_matmul_nodes(model) -> list[str]:
    """Names of the MatMul/Gemm nodes of the reward head in an exported graph (onnx.ModelProto or path), found by
    the module scope the exporter records on every node."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    names = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        scopes = _scope(node)
        if f"'{HEAD_SCOPE}'" in scopes or f"'{HEAD_SCOPE}." in scopes:
            names.append(node.name)
    return names


def _scope(node) -> str:
    return next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")


def linear_weights(model) -> dict[str, str]:
    """{constant B initializer of a MatMul: the backbone Linear it came from ("layers.0.mlp.up_proj")}, read from the
    module scopes the exporter records on every node."""
    import ast

    inits = {i.name for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or not _scope(node):
            continue
        modules = [m for m in ast.literal_eval(_scope(node)) if m.startswith("backbone.")]
        if modules:
            out[node.input[1]] = modules[-1][len("backbone."):]
    return out


def _write_rounded(model, weights: dict[str, str], smoothing) -> int:
    """Replace the 4-bit codes and scales of every MatMulNBits node whose Linear the calibration rounded (GPTQ) by
    those; returns how many. The shapes must be onnxruntime's own ([N, K / block, block / 2] and [N, K / block])."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    done = set()
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        source = node.input[1].rsplit("_Q", 1)[0]
        name = weights.get(source)
        block = next(a.i for a in node.attribute if a.name == "block_size")
        stored = smoothing.stored(name, "matmulnbits", block) if name else None
        if stored is None:
            continue
        for slot, key in ((1, "q"), (2, "scales")):
            init = inits[node.input[slot]]
            old = numpy_helper.to_array(init)
            new = stored[key].numpy()
            if new.size != old.size or new.dtype != old.dtype:
                raise ValueError(f"{name}: calibrated {key} {new.shape} {new.dtype} does not fit {node.name}'s "
                                 f"{init.name} {old.shape} {old.dtype}")
            init.CopyFrom(numpy_helper.from_array(new.reshape(old.shape), init.name))
        done.add(name)
    missing = set(smoothing.rounded) - done
    if missing:
        raise ValueError(f"calibrated int4 weights found no MatMulNBits node: {sorted(missing)[:4]}")
    return len(done)


def quantize_graph(src: Path, dst: Path, config: ExportConfig, head_nodes: list[str], external_data: bool,
                   smoothing=None, weights: dict[str, str] | None = None) -> dict:
    """Quantize the fp32 graph `src` into `dst`; returns the scheme's record for edgeprm.json. With a calibration
    that rounded the int4 weights (GPTQ) and the graph's `linear_weights`, its codes replace round-to-nearest's."""
    record = {"scheme": config.quantization, "excluded_nodes": head_nodes, "embedding": "fp32"}
    if config.quantization == "int8" and config.int8_method == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per output channel: after smoothing, weight columns carry the activations' outlier scales, and one range per
        # tensor would spend the int8 grid on them.
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=head_nodes,
                         use_external_data_format=external_data, extra_options={"MatMulConstBOnly": True})
        record.update(method="onnxruntime.quantization.quantize_dynamic", weight_type="QInt8", per_channel=True)
    else:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

        bits = 8 if config.quantization == "int8" else 4
        algo = DefaultWeightOnlyQuantConfig(block_size=config.block_size, is_symmetric=config.symmetric,
                                            accuracy_level=config.accuracy_level, bits=bits)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=config.block_size,
                                         is_symmetric=config.symmetric, accuracy_level=config.accuracy_level,
                                         nodes_to_exclude=head_nodes, algo_config=algo)
        quantizer.process()
        rounded = 0
        if bits == 4 and smoothing is not None and smoothing.rounded and weights is not None:
            rounded = _write_rounded(quantizer.model.model, weights, smoothing)
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=external_data)
        record.update(method="onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer", bits=bits,
                      block_size=config.block_size, symmetric=config.symmetric,
                      accuracy_level=config.accuracy_level, rounding="gptq" if rounded else "nearest",
                      gptq_nodes=rounded)
    return record


def _versions() -> dict:
    import onnx
    import onnxruntime

    import edgeprm

    return {"edgeprm": edgeprm.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": sys.version.split()[0]}


def _prepare_out_dir(out_dir: Path, model_dir: Path | None) -> None:
    """An empty or new directory, or an earlier bundle (whose listed files are replaced); nothing else."""
    if model_dir is not None and out_dir.resolve() == Path(model_dir).resolve():
        raise ValueError(f"OUT_DIR {out_dir} is the checkpoint directory; export into a directory of its own")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"OUT_DIR {out_dir} is a file; pass a directory (it is created when missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".export-*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    meta_file = out_dir / BUNDLE_FILE
    if meta_file.is_file():
        try:
            old = json.loads(meta_file.read_text()).get("files", [])
        except (json.JSONDecodeError, AttributeError):
            old = []
        meta_file.unlink()  # first: a half-replaced bundle must not look complete
        for f in old:
            if "/" not in f and (out_dir / f).is_file():
                (out_dir / f).unlink()
    elif any(out_dir.iterdir()):
        raise ValueError(f"OUT_DIR {out_dir} is not empty and holds no edgeprm bundle; pass a new or empty "
                         "directory (an earlier bundle there would be replaced)")


def _spec(scorer, model) -> dict:
    """The manifest fields that describe the model (the graph and quantization fields are added later)."""
    encoder, head = scorer.encoder, scorer.head
    fam = encoder.declaration
    return {
        "family": fam.family.value,
        "encoding": {"max_length": encoder.max_length, **fam.encoding_record(encoder.options)},
        "default_aggregation": fam.default_aggregation,
        "head": {"num_classes": head.num_classes, "hidden_layer": head.w1 is not None,
                 "normalisation": "sigmoid" if head.num_classes == 1 else "softmax[1]", "quantized": False},
        "source": str(model),
    }


def export(model, out_dir: str | os.PathLike, config: ExportConfig | None = None, **load_options) -> Path:
    """Export a checkpoint (local dir or hub id) to a bundle in `out_dir`; returns out_dir.

    `model` may also be an fp32 bundle: its graph is quantized as it is (no torch, no re-tracing), which is how a
    big model is exported once and quantized several ways.
    load_options are `edgeprm.load` options for the checkpoint (family, max_length, step_tag, good_token,
    bad_token, revision).
    """
    config = config or ExportConfig()
    out_dir = Path(out_dir)
    source = Path(model).expanduser() if isinstance(model, (str, os.PathLike)) else None
    smoothing = None
    with contextlib.ExitStack() as stack:
        if source is not None and (source / BUNDLE_FILE).is_file():
            bundle = read_bundle(source)
            if bundle.scheme != "none":
                raise ValueError(f"{source} is a {bundle.scheme!r} bundle; quantize from an fp32 bundle or from the "
                                 "checkpoint")
            if load_options:
                raise ValueError(f"{sorted(load_options)} apply when exporting a checkpoint; a bundle is quantized as "
                                 "it was exported: pass the checkpoint to change them")
            _prepare_out_dir(out_dir, source)
            m = bundle.manifest
            meta = {"family": m.family, "encoding": m.encoding, "default_aggregation": m.default_aggregation,
                    "head": m.head, "source": m.source}
            tokenizer_dir, fp32 = source, source / bundle.graph
            external = any(f != bundle.graph and f.startswith(bundle.graph) for f in bundle.files)
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-")))
        else:
            from edgeprm.backends.torch import load
            from edgeprm.config import ScorerConfig
            from edgeprm.loading import default_model_dir, resolve_model_dir

            if config.quantization != "none" and (config.smooth or config.gptq):
                from edgeprm.quant.calibrate import cached_calibration

                src_dir = default_model_dir() if model is None else resolve_model_dir(model)
                smoothing = cached_calibration(src_dir, config.quantization, config.calibration, smooth=config.smooth,
                                               rounding=config.rounding, blocksize=config.block_size,
                                               grid="matmulnbits")
            # The plain model is traced (or its trace reused) and the smoothing written into the graph afterwards.
            scorer = load(model, ScorerConfig.from_options(device="cpu", dtype="float32", **load_options),
                          pack_fp32=False)
            _prepare_out_dir(out_dir, scorer.model_dir)
            meta = _spec(scorer, model)
            tokenizer_dir = Path(scorer.encoder.tokenizer.source)
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-")))
            fp32 = tmp / graph_file_name("none")
            external = sum(p.numel() * 4 for p in scorer.backbone.parameters()) > EXTERNAL_DATA_BYTES
            trace_fp32(scorer, Path(scorer.model_dir), load_options, fp32, external)
            del scorer  # the quantizers load the graph again: free the torch weights first
            gc.collect()
            if smoothing is not None:
                smooth_graph(fp32, src_dir, smoothing)
        import onnx

        graph = onnx.load(str(fp32), load_external_data=False)  # the node scopes, read once
        head_nodes = head_matmul_nodes(graph)
        expected = 1 + bool(meta["head"]["hidden_layer"])
        assert len(head_nodes) == expected, f"found reward-head nodes {head_nodes}, expected {expected}"
        if config.quantization == "none":
            record = {"scheme": "none"}
            produced = sorted(p for p in fp32.parent.iterdir() if p.name.startswith(fp32.name))
        else:
            with _quiet():
                record = quantize_graph(fp32, tmp / config.graph, config, head_nodes, external, smoothing,
                                        linear_weights(graph) if smoothing is not None and smoothing.rounded else None)
            # Smoothing happens in the trace, so only an export from a checkpoint has it.
            record["smoothing"] = smoothing.to_record() if smoothing is not None else None
            produced = sorted(p for p in tmp.iterdir() if p.name.startswith(config.graph))
        files = []
        for p in produced:
            (shutil.copyfile if p.parent == source else shutil.move)(str(p), str(out_dir / p.name))
            files.append(p.name)
    for name in TOKENIZER_FILES + OPTIONAL_TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out_dir / name)
            files.append(name)
    # Written last: its presence marks a complete bundle.
    BundleManifest(**meta, graph=config.graph, files=files, quantization=record, versions=_versions()).write(out_dir)
    return out_dir


def bundle_size(out_dir: str | os.PathLike) -> int:
    """Bytes of the graph and its weights in a bundle (tokenizer files excluded)."""
    m = BundleManifest.read(Path(out_dir))
    return sum((Path(out_dir) / f).stat().st_size for f in m.files if f.startswith(m.graph))
