"""The fidelity gate: one evaluation for a model and its small variants, side by side, with a drop limit.

`edgeprm eval processbench|bon --model M --compare VARIANT... [--max-drop X]` scores the same rows with the model
and with each variant, prints the task's figures for all of them with each variant's change, `edgeprm parity`'s
agreement figures (`edgeprm.eval.parity.compare`) and the time each took, and fails (exit 1) when a variant loses
more than X points on a gated figure (ProcessBench: every split's F1 and the average F1; Best-of-N: the accuracy of
the scorer's own aggregation).

A VARIANT is
- a quantization scheme (`int8`, `int4`): the model with those weights (torch backend);
- a compute dtype (`bf16`, `fp16`, `fp32`, or the full names): the model computed in it;
- a directory holding an ONNX bundle (`edgeprm export`; it has an `edgeprm.json`): run with onnxruntime;
- any other directory or hub id: another checkpoint (an `edgeprm quantize` output, a retrained model), loaded with
  the model's scoring options.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeprm.backends.onnx import BUNDLE_FILE  # what marks a bundle directory (onnxruntime is imported on load only)
from edgeprm.config import DTYPES, ScorerConfig
from edgeprm.eval.parity import ParityReport, compare
from edgeprm.eval.scoring import score_rows, write_predictions
from edgeprm.eval.tables import cell, table
from edgeprm.quant.config import QUANT_SCHEMES

DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", **{d: d for d in DTYPES}}
# Options that change what a scorer computes, named by `Variant.describe` (batching and threads never do).
DESCRIBED = ("backend", "quantization", "dtype", "device", "family", "aggregation", "alpha", "max_length", "truncate",
             "split", "step_tag", "good_token", "bad_token", "revision")


@dataclass(frozen=True)
class Variant:
    """A scorer to evaluate: a label for tables, the model (None = the bundled demo PRM) and its ScorerConfig."""

    label: str
    model: str | None
    config: ScorerConfig

    def describe(self) -> str:
        """The model and the options that change its scores, e.g. 'demo-prm (quantization=int8)'."""
        opts = [f"{k}={getattr(self.config, k)}" for k in DESCRIBED
                if getattr(self.config, k) != ScorerConfig.DEFAULTS[k]]
        name = self.model if self.model is not None else "demo-prm"
        return f"{name} ({', '.join(opts)})" if opts else name

    def load(self):
        import edgeprm

        return edgeprm.load(self.model, config=self.config)


def reference_variant(model: str | None, config: ScorerConfig) -> Variant:
    return Variant(Path(model).name if model else "demo-prm", model, config)


def parse_variant(spec: str, reference: Variant) -> Variant:
    """The Variant a `--compare` argument names (see the module docstring)."""
    cfg = reference.config
    if spec in QUANT_SCHEMES or spec in DTYPE_ALIASES:
        if cfg.backend != "torch":
            raise ValueError(f"--compare {spec}: the reference is an ONNX bundle, which is not re-quantized or "
                             "recomputed on load; export the variant (`edgeprm export MODEL OUT_DIR --quantization "
                             "...`) and pass its directory")
        change = {"quantization": spec} if spec in QUANT_SCHEMES else {"dtype": DTYPE_ALIASES[spec]}
        return Variant(spec, reference.model, cfg.replace(**change))
    path = Path(spec)
    if (path / BUNDLE_FILE).is_file():
        return Variant(path.name, spec, cfg.replace(backend="onnx", quantization=None, dtype="auto", revision=None,
                                                    threads=cfg.threads if cfg.backend == "onnx" else None))
    if not path.exists() and (spec.count("/") != 1 or spec.startswith((".", "/"))):
        raise ValueError(f"--compare {spec!r} is not a quantization ({', '.join(QUANT_SCHEMES)}), a dtype "
                         f"({', '.join(DTYPE_ALIASES)}), an existing directory or a hub id (owner/name)")
    return Variant(path.name, spec, cfg.replace(backend="torch", quantization=None, threads=None))


def parse_variants(specs: Sequence[str], reference: Variant) -> list[Variant]:
    out = [parse_variant(s, reference) for s in specs]
    labels = [reference.label, *(v.label for v in out)]
    for i, v in enumerate(out):  # two variants with one name (two dirs called 'int8') get their position added
        if labels.count(v.label) > 1:
            out[i] = Variant(f"{v.label}#{i + 1}", v.model, v.config)
    return out


def predictions_path(base: Path | None, variant: Variant, is_reference: bool) -> Path | None:
    """The reference's predictions go to `base`; a variant's beside it: preds.jsonl -> preds.int8.jsonl."""
    if base is None or is_reference:
        return base
    safe = re.sub(r"[^\w.-]+", "_", variant.label)
    return base.with_name(f"{base.stem}.{safe}{base.suffix or '.jsonl'}")


@dataclass(frozen=True)
class VariantRun:
    """One scorer's evaluation: the task's report, how long loading and scoring took, and (for a variant) its
    agreement with the reference."""

    label: str
    scorer: str
    report: object  # ProcessBenchReport | BonReport
    load_seconds: float
    score_seconds: float
    rows: int  # rows scored in this run
    resumed: int = 0  # rows taken from an earlier run's predictions
    parity: ParityReport | None = None
    agreement: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def run_variant(task, variant: Variant, predictions: Path | None = None, resume: bool = False,
                progress: bool = True) -> tuple[VariantRun, list[dict]]:
    """Load the variant's scorer, score the task's rows (resumable through `predictions`), evaluate."""
    t0 = time.perf_counter()
    scorer = variant.load()
    t1 = time.perf_counter()
    name = variant.describe()
    counts: dict = {}
    results = score_rows(scorer, task.inputs, task.keys, name, predictions=predictions, resume=resume,
                         progress=progress, counts=counts)
    t2 = time.perf_counter()
    report = task.evaluate(results, scorer, name)
    if predictions is not None:
        write_predictions(predictions, task.keys, name, results, task.extra(results))
    del scorer
    gc.collect()  # the next variant's weights load into the memory this one held
    return VariantRun(variant.label, name, report, round(t1 - t0, 2), round(t2 - t1, 2), counts["scored"],
                      counts["kept"]), results


@dataclass(frozen=True)
class GateReport:
    """The reference's run and every variant's, and the drop limit (points; None = no limit)."""

    task: str
    reference: VariantRun
    variants: tuple[VariantRun, ...]
    max_drop: float | None = None

    def changes(self) -> list[tuple[str, str, float | None, float | None, bool]]:
        """(variant, figure, reference value, variant value, gated) for every figure of every variant."""
        ref = self.reference.report.figures()
        out = []
        for v in self.variants:
            for (name, a, gated), (_, b, _) in zip(ref, v.report.figures()):
                out.append((v.label, name, a, b, gated))
        return out

    def failures(self) -> list[str]:
        """The gated figures a variant loses more than `max_drop` points on (or cannot produce)."""
        if self.max_drop is None:
            return []
        out = []
        for label, name, a, b, gated in self.changes():
            if not gated or a is None:
                continue
            if b is None:
                out.append(f"{label}: {name} could not be computed (reference {a:.2f})")
            elif a - b > self.max_drop:
                out.append(f"{label}: {name} {b:.2f} vs {a:.2f}, a drop of {a - b:.2f} > {self.max_drop:g} points")
        return out

    def to_dict(self) -> dict:
        return {"task": self.task, "max_drop": self.max_drop, "reference": self.reference.to_dict(),
                "variants": [v.to_dict() for v in self.variants], "failures": self.failures()}


def gate(task, reference: Variant, variants: Sequence[Variant], max_drop: float | None = None,
         predictions: Path | None = None, resume: bool = False, progress: bool = True) -> GateReport:
    """Evaluate the reference, then each variant on the same rows, and compare them."""
    ref_run, ref_results = run_variant(task, reference, predictions_path(predictions, reference, True), resume,
                                       progress)
    runs = []
    for v in variants:
        run, results = run_variant(task, v, predictions_path(predictions, v, False), resume, progress)
        parity = compare(task.parity_rows(ref_results), task.parity_rows(results), v.label)
        runs.append(VariantRun(run.label, run.scorer, run.report, run.load_seconds, run.score_seconds, run.rows,
                               run.resumed, parity, tuple(task.agreement(ref_results, results))))
    return GateReport(task.name, ref_run, tuple(runs), max_drop)


PARITY_ROWS = (("step max |delta|", "step_max_abs", 4), ("step mean |delta|", "step_mean_abs", 5),
               ("Spearman (scores)", "spearman", 4), ("Kendall tau-b (scores)", "kendall", 4),
               ("pairwise agreement", "pairwise_agreement", 4))


def format_gate(g: GateReport) -> str:
    """The figures side by side (a variant's change in brackets; * = gated), agreement with the reference, time."""
    runs = [g.reference, *g.variants]
    head = ["", *(r.label for r in runs)]
    body = []
    for k, (name, a, gated) in enumerate(g.reference.report.figures()):
        row = [f"{name}{' *' if gated else ''}", cell(a, 2)]
        for v in g.variants:
            b = v.report.figures()[k][1]
            row.append(f"{cell(b, 2)} ({'-' if a is None or b is None else f'{b - a:+.2f}'})")
        body.append(row)
    for name, attr, digits in PARITY_ROWS:
        body.append([name, "", *(cell(getattr(v.parity, attr), digits) for v in g.variants)])
    if g.task == "bon":
        body.append(["Best-of-N top-1 agreement", "", *(cell(v.parity.top1_agreement, 4) for v in g.variants)])
    for k, (name, _) in enumerate(g.variants[0].agreement if g.variants else ()):
        body.append([f"{name} (%)", "", *(cell(v.agreement[k][1], 2) for v in g.variants)])
    body.append(["load / score seconds", *(f"{r.load_seconds:.1f} / {r.score_seconds:.1f}" for r in runs)])
    body.append(["rows scored (resumed)", *(f"{r.rows} ({r.resumed})" for r in runs)])
    body.append(["rows per second", *(cell(r.rows / r.score_seconds if r.rows and r.score_seconds else None, 1)
                                      for r in runs)])
    lines = [f"fidelity gate ({g.task}): reference {g.reference.scorer}",
             *(f"  {v.label}: {v.scorer}" for v in g.variants), *table(head, body),
             "* gated" + (f": a variant fails when it loses more than {g.max_drop:g} points" if g.max_drop is not None
                          else " (pass --max-drop X to fail on a loss of more than X points)")]
    for v in g.variants:
        if v.parity is not None and not v.parity.complete:
            lines.append(f"{v.label}: {len(v.parity.step_mismatch)} rows with other step counts than the reference")
    lines += [f"FAIL {f}" for f in g.failures()]
    return "\n".join(lines)
