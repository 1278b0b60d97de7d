"""Do the small variants of a PRM still judge like fp32, next to bf16's own noise? The measurement behind the
quantization bars (`edgeprm.eval.parity.BF16_RELATIVE_BARS`), shared by the tests and bench/bench_quant.py.

    variants = [Variant("bf16", dtype="bfloat16"), Variant("int8", quantization="int8"),
                Variant("onnx int8", backend="onnx", quantization="int8")]
    reports = measure(model_dir, rows, variants, work_dir)       # {label: ParityReport vs fp32}
    verdicts(reports)                                             # {label: [bar failures]} (bf16 is the yardstick)

Rows carry a Best-of-N `group` (and `is_correct` for accuracy). Every variant scores with `truncate=True`, so a small
model's position limit cuts the same steps everywhere. ONNX variants are exported from the checkpoint (with the
calibrated smoothing of their scheme) into `work_dir` once and reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeprm.eval.parity import BF16_RELATIVE_BARS, ParityReport, compare


@dataclass(frozen=True)
class Variant:
    label: str
    backend: str = "torch"
    quantization: object = None  # a scheme name or a QuantConfig (torch); "int8" | "int4" (onnx)
    dtype: str = "auto"
    export: dict = field(default_factory=dict)  # ExportConfig fields for an ONNX variant

    @property
    def scheme(self) -> str | None:
        q = self.quantization
        return getattr(q, "scheme", q) if q not in (None, "none") else None


def score(model, rows: list[dict], **load) -> list[dict]:
    """Rows as `edgeprm score` writes them, scored by `edgeprm.load(model, **load)`."""
    import edgeprm

    scorer = edgeprm.load(model, device="cpu", truncate=True, **load)
    return [{**r, **x.to_dict(with_id=False)} for r, x in zip(rows, scorer.score_batch(rows))]


def _bundle(model: Path, v: Variant, work: Path) -> Path:
    from edgeprm.backends.onnx import BUNDLE_FILE
    from edgeprm.export.onnx import ExportConfig, export

    opts = {"quantization": v.quantization, **v.export}
    out = work / ("onnx-" + "-".join(f"{k}={opts[k]}" for k in sorted(opts)).replace("/", "_"))
    if not (out / BUNDLE_FILE).is_file():
        export(model, out, ExportConfig(**opts))
    return out


def measure(model: str | Path, rows: list[dict], variants: list[Variant], work: Path | None = None,
            reference: list[dict] | None = None, log=None) -> dict[str, ParityReport]:
    """Each variant's ParityReport against fp32 torch on `rows` (fp32 scored here unless `reference` is given)."""
    model = Path(model)
    ref = reference if reference is not None else score(model, rows, dtype="float32")
    out = {}
    for v in variants:
        t = time.perf_counter()
        if v.backend == "onnx":
            if work is None:
                raise ValueError("ONNX variants need a work directory for their bundles")
            scored = score(_bundle(model, v, Path(work)), rows, backend="onnx")
        else:
            scored = score(model, rows, quantization=v.quantization, dtype=v.dtype)
        out[v.label] = compare(ref, scored, v.label)
        if log is not None:
            log(f"{v.label}: {len(rows)} rows in {time.perf_counter() - t:.0f} s")
    return out


def verdicts(reports: dict[str, ParityReport], variants: list[Variant], yardstick: str = "bf16") -> dict[str, list]:
    """{label: failures of BF16_RELATIVE_BARS[scheme]} for every quantized variant (the yardstick is bf16)."""
    bf16 = reports[yardstick]
    return {v.label: BF16_RELATIVE_BARS[v.scheme].failures(reports[v.label], bf16) for v in variants
            if v.scheme in BF16_RELATIVE_BARS}


def format_rows(reports: dict[str, ParityReport]) -> str:
    """One line per variant: the figures the bars look at."""
    head = (f"{'path':24} {'decisive top-1':>15} {'changed picks (fp32 margins)':>34} {'Spearman':>9} "
            f"{'step mean':>10} {'p99':>7} {'BoN acc':>13}")
    lines = [head, "-" * len(head)]
    for label, r in reports.items():
        n, agree = r.decisive()
        margins = sorted((m for _, m in r.top1_changes), reverse=True)
        shown = ", ".join(f"{m:.3f}" for m in margins[:4]) + (" ..." if len(margins) > 4 else "")
        acc = (f"{r.bon_accuracy:.3f}/{r.reference_bon_accuracy:.3f}" if r.bon_accuracy is not None else "-")
        lines.append(f"{label:24} {agree if agree is None else f'{agree:.3f}':>9} of {n:<3} "
                     f"{f'{len(margins)} ({shown})':>34} {r.spearman:9.4f} {r.step_mean_abs:10.2e} "
                     f"{r.step_p99_abs:7.4f} {acc:>13}")
    return "\n".join(lines)
