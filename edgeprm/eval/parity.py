"""Fidelity of candidate score files against a reference: `edgeprm parity REFERENCE.jsonl CANDIDATE.jsonl...`.

REFERENCE is the output of `edgeprm score` with a full-precision model; each CANDIDATE is the same input scored
another way (8/4-bit, ONNX, another device). Rows are matched by `id` (by line number when the reference has no ids).
For each candidate:
- step max / mean |delta| over the steps of rows that align (same id, same step count), and score max |delta|;
- Spearman and Kendall tau-b of the trajectory scores (ties get mid-ranks; `edgeprm.stats`, numpy only);
- pairwise order agreement: over pairs of rows of one group whose reference scores differ, the share the candidate
  orders the same way (a candidate tie counts as a disagreement);
- Best-of-N top-1 agreement: the share of groups whose highest-scoring row (first on ties, NaN lowest:
  `edgeprm.stats.best_index`) is the same; rows are grouped by `--group-key` (default `group`) when rows carry
  it, else by identical `problem` text (`edgeprm.rows.group_rows`). The groups whose pick changed are listed with
  the reference's margin (its best score minus its second best): a change where the reference itself was all but
  tied says little about the candidate;
- Best-of-N accuracy (reference and candidate) when rows carry a correctness label (`is_correct`).
Missing and extra ids, duplicate ids and rows whose step counts differ are counted and listed, never dropped
silently; groups with such a row are left out of the per-group figures and counted as incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprm.rows import group_rows, iter_jsonl
from edgeprm.stats import best_index, kendall_tau_b, spearman

LABEL_KEY = "is_correct"
DECISIVE_MARGIN = 0.01  # a Best-of-N group whose best two reference scores differ by more is decisive


# -- score files --------------------------------------------------------------------------------------------------
def read_scores(path: str | Path) -> list[dict]:
    """Rows of an `edgeprm score` output file; each must carry `score` and `step_rewards`."""
    rows = []
    for n, row in iter_jsonl(path):
        if "score" not in row or "step_rewards" not in row:
            raise ValueError(f"{path} line {n}: a score row needs 'score' and 'step_rewards' (the output of "
                             "`edgeprm score`)")
        row.setdefault("_line", n)
        rows.append(row)
    return rows


def _key(row: dict, i: int) -> str:
    return str(row["id"]) if row.get("id") is not None else f"line {row.get('_line', i + 1)}"


def _value(v) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class ParityReport:
    """One candidate file against the reference. Fractions are in [0, 1]; None where nothing could be measured."""

    candidate: str
    n_reference: int
    n_candidate: int
    n_aligned: int  # rows in both files with the same number of steps
    missing: tuple[str, ...]  # reference ids the candidate lacks
    extra: tuple[str, ...]  # candidate ids the reference lacks
    duplicates: tuple[str, ...]  # ids that occur more than once in either file (the first row is used)
    step_mismatch: tuple[str, ...]  # ids whose step counts (or null steps) differ
    n_steps: int
    step_max_abs: float | None
    step_mean_abs: float | None
    score_max_abs: float | None
    spearman: float | None
    kendall: float | None
    n_pairs: int
    pairwise_agreement: float | None
    n_groups: int  # complete groups (every row aligned), used for top-1 and accuracy
    incomplete_groups: int
    top1_agreement: float | None
    top1_changes: tuple[tuple[str, float], ...]  # (group, reference margin) of groups whose pick changed
    reference_bon_accuracy: float | None
    bon_accuracy: float | None
    step_p99_abs: float | None = None
    margins: tuple[float, ...] = ()  # the reference's best-minus-second-best score of every complete group
    picks_kept: tuple[bool, ...] = ()  # per complete group (same order): the candidate picks the reference's best

    def decisive(self, margin: float = DECISIVE_MARGIN) -> tuple[int, float | None]:
        """(groups whose reference margin exceeds `margin`, top-1 agreement over them): near-ties are tie-breaking
        noise, so agreement that means something is counted over the decisive groups."""
        kept = [k for m, k in zip(self.margins, self.picks_kept) if m > margin]
        return len(kept), (sum(kept) / len(kept) if kept else None)

    @property
    def max_changed_margin(self) -> float | None:
        """The largest reference margin among groups whose Best-of-N pick changed (None if none changed)."""
        return max((m for _, m in self.top1_changes), default=None)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.extra or self.duplicates or self.step_mismatch)

    def to_dict(self) -> dict:
        return asdict(self)


def _index(rows: list[dict]) -> tuple[dict[str, dict], list[str]]:
    out, dups = {}, []
    for i, r in enumerate(rows):
        k = _key(r, i)
        if k in out:
            dups.append(k)
        else:
            out[k] = r
    return out, dups


def compare(reference: list[dict], candidate: list[dict], name: str = "candidate",
            group_key: str = "group") -> ParityReport:
    """Compare score rows (as read by `read_scores`) of a candidate with the reference's."""
    ref, dup_r = _index(reference)
    cand, dup_c = _index(candidate)
    missing = [k for k in ref if k not in cand]
    extra = [k for k in cand if k not in ref]
    aligned, mismatch, deltas = [], [], []
    for k, r in ref.items():
        c = cand.get(k)
        if c is None:
            continue
        rs, cs = r["step_rewards"], c["step_rewards"]
        if len(rs) != len(cs) or any((a is None) != (b is None) for a, b in zip(rs, cs)):
            mismatch.append(k)
            continue
        aligned.append(k)
        deltas += [abs(float(a) - float(b)) for a, b in zip(rs, cs) if a is not None]
    rs = np.array([_value(ref[k]["score"]) for k in aligned])
    cs = np.array([_value(cand[k]["score"]) for k in aligned])
    finite = np.isfinite(rs) & np.isfinite(cs)
    score_d = np.abs(rs - cs)[finite]

    keys = list(ref)
    groups = {g: [keys[i] for i in idx] for g, idx in group_rows(ref.values(), group_key).items()}
    ok = set(aligned)
    complete = {g: m for g, m in groups.items() if all(k in ok for k in m)}
    agree = pairs = top1 = 0
    changes = []
    correct_ref = correct_cand = labelled = 0
    margins, kept = [], []
    for g, members in complete.items():
        r_sc = [_value(ref[k]["score"]) for k in members]
        c_sc = [_value(cand[k]["score"]) for k in members]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                dr, dc = r_sc[i] - r_sc[j], c_sc[i] - c_sc[j]
                if dr != 0 and not math.isnan(dr):
                    pairs += 1
                    agree += int(np.sign(dr) == np.sign(dc))
        bi, bc = best_index(r_sc), best_index(c_sc)
        top1 += int(bi == bc)
        rest = [v for i, v in enumerate(r_sc) if i != bi and not math.isnan(v)]
        margin = r_sc[bi] - max(rest) if rest else math.inf
        margins.append(margin)
        kept.append(bi == bc)
        if bi != bc:
            changes.append((g, margin))
        labels = [ref[k].get(LABEL_KEY, cand[k].get(LABEL_KEY)) for k in members]
        if all(v is not None for v in labels):
            labelled += 1
            correct_ref += bool(labels[bi])
            correct_cand += bool(labels[bc])
    n_groups = len(complete)
    return ParityReport(
        candidate=name, n_reference=len(reference), n_candidate=len(candidate), n_aligned=len(aligned),
        missing=tuple(missing), extra=tuple(extra), duplicates=tuple(dict.fromkeys(dup_r + dup_c)),
        step_mismatch=tuple(mismatch), n_steps=len(deltas),
        step_max_abs=max(deltas) if deltas else None,
        step_mean_abs=float(np.mean(deltas)) if deltas else None,
        score_max_abs=float(score_d.max()) if len(score_d) else None,
        spearman=_none_if_nan(spearman(rs[finite], cs[finite])),
        kendall=_none_if_nan(kendall_tau_b(rs[finite], cs[finite])),
        n_pairs=pairs, pairwise_agreement=agree / pairs if pairs else None,
        n_groups=n_groups, incomplete_groups=len(groups) - n_groups,
        top1_agreement=top1 / n_groups if n_groups else None, top1_changes=tuple(changes),
        reference_bon_accuracy=correct_ref / labelled if labelled else None,
        bon_accuracy=correct_cand / labelled if labelled else None,
        step_p99_abs=float(np.quantile(deltas, 0.99)) if deltas else None, margins=tuple(margins),
        picks_kept=tuple(kept),
    )


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def compare_files(reference: str | Path, candidates: Sequence[str | Path], group_key: str = "group"):
    ref = read_scores(reference)
    return [compare(ref, read_scores(c), str(c), group_key) for c in candidates]


# -- fidelity bars ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FidelityBar:
    """What a candidate must reach against full precision; unset fields are not checked."""

    max_step_delta: float | None = None
    min_spearman: float | None = None
    min_top1: float | None = None

    def failures(self, r: ParityReport) -> list[str]:
        out = []
        if not r.complete:
            out.append(f"{len(r.missing)} missing, {len(r.extra)} extra, {len(r.duplicates)} duplicate ids and "
                       f"{len(r.step_mismatch)} rows with other step counts")
        checks = [("step max |delta|", r.step_max_abs, self.max_step_delta, False),
                  ("Spearman", r.spearman, self.min_spearman, True),
                  ("Best-of-N top-1 agreement", r.top1_agreement, self.min_top1, True)]
        for what, got, bar, at_least in checks:
            if bar is None:
                continue
            if got is None or (got < bar if at_least else got > bar):
                out.append(f"{what} {got if got is None else round(got, 5)} {'<' if at_least else '>'} {bar}")
        return out


# Absolute bars against fp32. On a small, sharp PRM even bf16 misses them (bf16 rounding alone moves one demo-PRM
# step by 0.69 and changes 1.4 % of Best-of-4 picks, all near-ties): edgeprm's quantized scorers are held to
# BF16_RELATIVE_BARS instead, measured against bf16's own noise on the same rows.
QUANT_BARS = {"int8": FidelityBar(max_step_delta=0.02, min_top1=0.99),
              "int4": FidelityBar(min_spearman=0.98, min_top1=0.95)}


@dataclass(frozen=True)
class RelativeBar:
    """A quantized scorer against fp32, judged next to bf16 against fp32 on the same rows (the precision every GPU
    user already accepts). Top-1 agreement counts the decisive groups only (reference margin > DECISIVE_MARGIN)."""

    agreement_drop: float  # decisive top-1 agreement >= bf16's - this
    max_changed_margin: float | None = None  # no pick may change where fp32's margin exceeds this
    bon_drop: float | None = None  # Best-of-N accuracy within this of fp32's
    mean_ratio: float | None = None  # mean step |delta| <= this x bf16's
    min_spearman: float | None = None

    def failures(self, r: ParityReport, bf16: ParityReport) -> list[str]:
        out = [] if r.complete else ["rows did not align"]
        n, agree = r.decisive()
        _, agree16 = bf16.decisive()
        if agree is not None and agree16 is not None and agree < agree16 - self.agreement_drop - 1e-12:
            out.append(f"decisive top-1 agreement {agree:.3f} < bf16's {agree16:.3f} - {self.agreement_drop} "
                       f"({n} decisive groups)")
        if self.max_changed_margin is not None:
            big = [m for _, m in r.top1_changes if m > self.max_changed_margin]
            if big:
                out.append(f"{len(big)} picks changed where fp32's margin exceeds {self.max_changed_margin} "
                           f"(largest {max(big):.3f})")
        if self.bon_drop is not None and r.bon_accuracy is not None and r.reference_bon_accuracy is not None:
            if abs(r.bon_accuracy - r.reference_bon_accuracy) > self.bon_drop + 1e-12:
                out.append(f"Best-of-N accuracy {r.bon_accuracy:.3f} is more than {self.bon_drop} from fp32's "
                           f"{r.reference_bon_accuracy:.3f}")
        if self.mean_ratio is not None and r.step_mean_abs is not None and bf16.step_mean_abs is not None:
            if r.step_mean_abs > self.mean_ratio * bf16.step_mean_abs:
                out.append(f"mean step |delta| {r.step_mean_abs:.2e} > {self.mean_ratio} x bf16's "
                           f"{bf16.step_mean_abs:.2e}")
        if self.min_spearman is not None and (r.spearman is None or r.spearman < self.min_spearman):
            out.append(f"Spearman {r.spearman} < {self.min_spearman}")
        return out


BF16_RELATIVE_BARS = {
    "int8": RelativeBar(agreement_drop=0.01, max_changed_margin=0.05, bon_drop=0.01, mean_ratio=2.0),
    "int4": RelativeBar(agreement_drop=0.03, min_spearman=0.98),
}


# -- report -------------------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_table(reports: Sequence[ParityReport], reference: str) -> str:
    names = [Path(r.candidate).name for r in reports]
    first = reports[0]
    rows = [
        ("rows aligned", [f"{r.n_aligned}/{r.n_reference}" for r in reports]),
        ("missing / extra ids", [f"{len(r.missing)} / {len(r.extra)}" for r in reports]),
        ("duplicate ids", [str(len(r.duplicates)) for r in reports]),
        ("step-count mismatches", [str(len(r.step_mismatch)) for r in reports]),
        ("step max |delta|", [_fmt(r.step_max_abs) for r in reports]),
        ("step mean |delta|", [_fmt(r.step_mean_abs, 5) for r in reports]),
        ("score max |delta|", [_fmt(r.score_max_abs) for r in reports]),
        ("Spearman (scores)", [_fmt(r.spearman) for r in reports]),
        ("Kendall tau-b (scores)", [_fmt(r.kendall) for r in reports]),
        ("pairwise agreement", [_fmt(r.pairwise_agreement) for r in reports]),
        ("groups (incomplete)", [f"{r.n_groups} ({r.incomplete_groups})" for r in reports]),
        ("Best-of-N top-1 agreement", [_fmt(r.top1_agreement) for r in reports]),
        ("picks changed (max ref. margin)", [f"{len(r.top1_changes)} ({_fmt(r.max_changed_margin)})"
                                             for r in reports]),
        ("Best-of-N accuracy", [_fmt(r.bon_accuracy) for r in reports]),
    ]
    width = max(len(k) for k, _ in rows)
    cols = [max(len(n), *(len(v[i]) for _, v in rows)) for i, n in enumerate(names)]
    lines = [f"reference: {reference} ({first.n_reference} rows; Best-of-N accuracy "
             f"{_fmt(first.reference_bon_accuracy)})", "",
             " " * width + "  " + "  ".join(n.rjust(c) for n, c in zip(names, cols))]
    lines += [k.ljust(width) + "  " + "  ".join(x.rjust(c) for x, c in zip(v, cols)) for k, v in rows]
    for r in reports:
        for what, ids in (("missing", r.missing), ("extra", r.extra), ("duplicate", r.duplicates),
                          ("other step count", r.step_mismatch)):
            if ids:
                more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
                lines.append(f"{Path(r.candidate).name}: {what} ids {', '.join(map(repr, ids[:5]))}{more}")
    return "\n".join(lines)
