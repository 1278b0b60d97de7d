"""ProcessBench: find the first wrong step of a solution. The reader, the official metric and the threshold sweep.

Data (the official format, one row per solution): `id, generator, problem, steps (list of strings),
final_answer_correct, label`, where `label` is the 0-based index of the first wrong step or -1 when every step is
correct. Splits `gsm8k`, `math`, `olympiadbench`, `omnimath`. `read_processbench` reads a JSON-array or JSONL file
(its split is the file's name), a directory of `<split>.json` files, or the hub dataset `Qwen/ProcessBench` (through
the local hub cache when offline).

The metric, for a PRM: a solution's predicted first error is its first step whose reward is below the threshold
(0.5 unless tuned), or -1 when none is; accuracy on the erroneous subset (prediction == label) and on the all-correct
subset (prediction == -1), both in %, and F1 = their harmonic mean. The average over splits is the plain mean of the
split F1s (the "Avg. F1" papers print). A subset that is empty has no accuracy (None) and then no F1: it is never
counted as 0 or 100.

The threshold sweep finds, per split and for the average, the threshold that maximises F1 on the same data. It is
reported as tuned on the test data (an optimistic figure), never used for the headline numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprm.eval.tables import cell, table

SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")
HUB_DATASET = "Qwen/ProcessBench"
THRESHOLD = 0.5
SWEEP_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # the thresholds the sweep table prints


@dataclass(frozen=True)
class ProcessBenchRow:
    """One solution: `label` is the first wrong step (0-based) or -1 when all steps are correct."""

    id: str
    split: str
    problem: str
    steps: tuple[str, ...]
    label: int
    final_answer_correct: bool | None = None
    generator: str | None = None

    @property
    def key(self) -> str:
        """Unique over splits: '<split>/<id>'."""
        return f"{self.split}/{self.id}"

    def as_input(self) -> dict:
        """The scorer's input row."""
        return {"id": self.id, "problem": self.problem, "steps": list(self.steps)}


# -- reading ------------------------------------------------------------------------------------------------------
def _records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); expected a JSON array of "
                             "ProcessBench rows or JSONL") from None
        return data
    from edgeprm.rows import parse_line

    return [parse_line(line, f"{path} line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def parse_row(record, split: str, where: str) -> ProcessBenchRow:
    """Check one record of the official format; errors name `where` (file and row) and the row's id."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a ProcessBench row must be a JSON object; got {type(record).__name__}")
    missing = [k for k in ("id", "problem", "steps", "label") if k not in record]
    if missing:
        raise ValueError(f"{where}: row {record.get('id')!r} lacks {', '.join(map(repr, missing))}; a ProcessBench "
                         "row has id, generator, problem, steps, final_answer_correct, label")
    rid = str(record["id"])
    steps, label = record["steps"], record["label"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise ValueError(f"{where}: row {rid!r}: 'steps' must be a non-empty list of non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"{where}: row {rid!r}: 'label' must be an integer (-1 or a step index); got {label!r}")
    check_label(rid, label, len(steps), where)
    if not isinstance(record["problem"], str) or not record["problem"].strip():
        raise ValueError(f"{where}: row {rid!r}: 'problem' must be a non-empty string")
    fac = record.get("final_answer_correct")
    return ProcessBenchRow(rid, split, record["problem"], tuple(steps), label, None if fac is None else bool(fac),
                           record.get("generator"))


def check_label(row_id: str, label: int, n_steps: int, where: str = "") -> None:
    if not -1 <= label < n_steps:
        lead = f"{where}: " if where else ""
        raise ValueError(f"{lead}row {row_id!r}: label {label} is outside its {n_steps} steps (expected -1 for an "
                         f"all-correct solution, or the first wrong step's index 0..{n_steps - 1})")


def read_split(path: str | Path, split: str | None = None) -> list[ProcessBenchRow]:
    """The rows of one file (a JSON array or JSONL); the split is the file's name unless given."""
    path = Path(path)
    split = split or path.stem
    rows = [parse_row(rec, split, f"{path} row {i}") for i, rec in enumerate(_records(path))]
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            raise ValueError(f"{path}: id {r.id!r} occurs more than once; ids must be unique within a split")
        seen.add(r.id)
    return rows


def _hub_file(split: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(hf_hub_download(HUB_DATASET, f"{split}.json", repo_type="dataset"))
    except (OSError, ValueError, HfHubHTTPError) as e:
        raise ValueError(f"could not get ProcessBench split {split!r} from the hub dataset {HUB_DATASET} (offline, or "
                         f"not in the local hub cache: {type(e).__name__}); pass --data PATH, a file or a directory "
                         "of <split>.json files in the official format") from None


def requested_splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or 'all'; got {split!r}")
    return (split,)


def read_processbench(data: str | Path | None = None, split: str = "all") -> tuple[dict[str, list], list[str]]:
    """({split: rows}, splits asked for but absent). `data`: a file, a directory of `<split>.json` (or `.jsonl`)
    files, or None for the hub dataset. A file's split is its name; `split` must then be 'all' or that name."""
    if data is None:
        return {s: read_split(_hub_file(s), s) for s in requested_splits(split)}, []
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"ProcessBench data {path} does not exist; pass a file or a directory of "
                                "<split>.json files")
    if path.is_file():
        if split not in ("all", path.stem):
            raise ValueError(f"{path} holds split {path.stem!r}, not {split!r}; pass --split all or {path.stem}, or "
                             "a directory of <split>.json files")
        return {path.stem: read_split(path)}, []
    out, absent = {}, []
    for s in requested_splits(split):
        found = [path / f"{s}{ext}" for ext in (".json", ".jsonl") if (path / f"{s}{ext}").is_file()]
        if found:
            out[s] = read_split(found[0], s)
        else:
            absent.append(s)
    if not out:
        raise FileNotFoundError(f"no ProcessBench split of {requested_splits(split)} in {path} (expected "
                                "<split>.json or <split>.jsonl files)")
    return out, absent


# -- the metric ---------------------------------------------------------------------------------------------------
def first_error(step_rewards: Sequence[float | None], threshold: float = THRESHOLD) -> int:
    """Index of the first step whose reward is below `threshold`, or -1. Steps cut by truncation (None) are
    skipped: a truncated solution is judged on the steps that were read."""
    return next((i for i, r in enumerate(step_rewards) if r is not None and r < threshold), -1)


def predict(rows: Sequence[ProcessBenchRow], step_rewards: Sequence[Sequence[float | None]],
            threshold: float = THRESHOLD) -> list[int]:
    """The predicted first error of each row; a reward list whose length is not the row's step count is an error
    naming the row."""
    if len(rows) != len(step_rewards):
        raise ValueError(f"need one step-reward list per row; got {len(step_rewards)} for {len(rows)} rows")
    out = []
    for row, rewards in zip(rows, step_rewards):
        if len(rewards) != len(row.steps):
            raise ValueError(f"row {row.id!r} ({row.split}): {len(rewards)} step rewards for {len(row.steps)} steps; "
                             "the rewards were scored on other data")
        out.append(first_error(rewards, threshold))
    return out


def f1(error_accuracy: float | None, correct_accuracy: float | None) -> float | None:
    """Harmonic mean of the two accuracies (0 when both are 0); None when either is undefined."""
    if error_accuracy is None or correct_accuracy is None:
        return None
    total = error_accuracy + correct_accuracy
    return 2 * error_accuracy * correct_accuracy / total if total > 0 else 0.0


@dataclass(frozen=True)
class SplitResult:
    """The official figures of one split, accuracies and F1 in %; None where a subset is empty."""

    split: str
    n: int
    n_erroneous: int
    n_correct: int
    error_accuracy: float | None
    correct_accuracy: float | None
    f1: float | None
    truncated: int = 0  # rows scored on the steps that fit the model's limit


def score_split(rows: Sequence[ProcessBenchRow], predictions: Sequence[int], split: str | None = None,
                truncated: int = 0) -> SplitResult:
    """The official metric of predicted first errors (-1 = no error found) against the rows' labels."""
    if len(rows) != len(predictions):
        raise ValueError(f"need one prediction per row; got {len(predictions)} for {len(rows)} rows")
    if not rows:
        raise ValueError("a split needs at least one row; got 0")
    err_hits, cor_hits = [], []
    for row, p in zip(rows, predictions):
        check_label(row.id, row.label, len(row.steps))
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not -1 <= p < len(row.steps):
            raise ValueError(f"row {row.id!r}: prediction {p!r} is outside its {len(row.steps)} steps (expected -1 "
                             f"or 0..{len(row.steps) - 1})")
        (cor_hits if row.label == -1 else err_hits).append(p == row.label)
    ea = 100.0 * float(np.mean(err_hits)) if err_hits else None
    ca = 100.0 * float(np.mean(cor_hits)) if cor_hits else None
    return SplitResult(split or rows[0].split, len(rows), len(err_hits), len(cor_hits), ea, ca, f1(ea, ca), truncated)


def average_f1(results: Sequence[SplitResult]) -> float | None:
    """The mean of the split F1s (None when any is undefined)."""
    values = [r.f1 for r in results]
    return float(np.mean(values)) if values and all(v is not None for v in values) else None


# -- the threshold sweep ------------------------------------------------------------------------------------------
def hit_intervals(rows: Sequence[ProcessBenchRow], step_rewards: Sequence[Sequence[float | None]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float64 [N]: row i's prediction is right exactly for thresholds t with lo[i] < t <= hi[i].

    A first error predicted at step L needs reward[L] < t <= every earlier reward; an all-correct prediction needs
    t <= every reward. Empty intervals (lo >= hi) are rows no threshold gets right."""
    predict(rows, step_rewards)  # the step-count check
    lo, hi = np.empty(len(rows)), np.empty(len(rows))
    for i, (row, rewards) in enumerate(zip(rows, step_rewards)):
        kept = [r for r in rewards if r is not None]
        if row.label == -1:
            lo[i], hi[i] = -math.inf, min(kept, default=math.inf)
        elif row.label < len(kept):
            lo[i], hi[i] = kept[row.label], min(kept[: row.label], default=math.inf)
        else:  # the labelled step was cut: never predicted
            lo[i], hi[i] = math.inf, -math.inf
    return lo, hi


def _hits(lo: np.ndarray, hi: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many intervals (lo, hi] hold each threshold, O((N + M) log N)."""
    ok = lo < hi
    lo_s, hi_s = np.sort(lo[ok]), np.sort(hi[ok])
    return np.searchsorted(lo_s, thresholds, side="left") - np.searchsorted(hi_s, thresholds, side="left")


def f1_curve(rows: Sequence[ProcessBenchRow], step_rewards, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(error accuracy, correct accuracy, F1) in % at each threshold (NaN where a subset is empty)."""
    t = np.asarray(thresholds, dtype=np.float64)
    lo, hi = hit_intervals(rows, step_rewards)
    err = np.array([r.label != -1 for r in rows])
    curves = []
    for subset in (err, ~err):
        n = int(subset.sum())
        curves.append(100.0 * _hits(lo[subset], hi[subset], t) / n if n else np.full(len(t), np.nan))
    ea, ca = curves
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(ea + ca > 0, 2 * ea * ca / (ea + ca), 0.0)
    return ea, ca, np.where(np.isnan(ea) | np.isnan(ca), np.nan, f)


def candidate_thresholds(step_rewards_lists) -> np.ndarray:
    """Every threshold at which some prediction can change, and one point inside each stretch between them."""
    values = np.unique(np.array([r for rewards in step_rewards_lists for r in rewards if r is not None], dtype=float))
    if len(values) == 0:
        return np.array([THRESHOLD])
    mids = (values[1:] + values[:-1]) / 2
    return np.unique(np.r_[values[0] - 1e-6, values, mids, np.nextafter(values, np.inf), values[-1] + 1e-6])


@dataclass(frozen=True)
class SweepResult:
    """The F1-optimal threshold of one split (or of the average): tuned on this data, so an optimistic figure.

    Every threshold in [low, high] (of those tried) reaches `f1`; `threshold` is the middle of that stretch. `grid`
    holds (threshold, F1) at `SWEEP_GRID`."""

    split: str
    threshold: float
    low: float
    high: float
    f1: float | None
    error_accuracy: float | None
    correct_accuracy: float | None
    grid: tuple[tuple[float, float | None], ...]


def _best(name: str, t: np.ndarray, f: np.ndarray, ea: np.ndarray, ca: np.ndarray, grid_f: np.ndarray) -> SweepResult:
    grid = tuple((g, None if math.isnan(v) else float(v)) for g, v in zip(SWEEP_GRID, grid_f))
    if np.all(np.isnan(f)):
        return SweepResult(name, THRESHOLD, THRESHOLD, THRESHOLD, None, None, None, grid)
    k = int(np.nanargmax(f))
    j = k
    while j + 1 < len(f) and f[j + 1] == f[k]:  # the stretch of thresholds that reach the best F1
        j += 1
    ea_v = None if math.isnan(ea[k]) else float(ea[k])
    ca_v = None if math.isnan(ca[k]) else float(ca[k])
    return SweepResult(name, float((t[k] + t[j]) / 2), float(t[k]), float(t[j]), float(f[k]), ea_v, ca_v, grid)


def threshold_sweep(by_split: dict[str, tuple[Sequence[ProcessBenchRow], Sequence]]) -> list[SweepResult]:
    """F1-optimal threshold per split, then for the average of the split F1s (one threshold shared by all splits,
    as a deployment would use). `by_split`: {split: (rows, step_rewards)}."""
    t = candidate_thresholds(rw for _, rewards in by_split.values() for rw in rewards)
    g = np.asarray(SWEEP_GRID)
    out, curves, grid_curves = [], [], []
    for name, (rows, rewards) in by_split.items():
        ea, ca, f = f1_curve(rows, rewards, t)
        grid_f = f1_curve(rows, rewards, g)[2]
        out.append(_best(name, t, f, ea, ca, grid_f))
        curves.append(f)
        grid_curves.append(grid_f)
    if len(by_split) > 1:
        nan = np.full(len(t), np.nan)
        out.append(_best("average", t, np.mean(curves, axis=0), nan, nan, np.mean(grid_curves, axis=0)))
    return out


# -- the report ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessBenchReport:
    """Everything `edgeprm eval processbench` prints for one scorer."""

    scorer: str
    threshold: float
    splits: tuple[SplitResult, ...]
    average_f1: float | None
    sweep: tuple[SweepResult, ...]
    calibration: tuple  # one `edgeprm.eval.calibration.Calibration` per split, then one over all splits
    absent_splits: tuple[str, ...] = ()
    seconds: float = 0.0

    def figures(self) -> list[tuple[str, float | None, bool]]:
        """(name, value, gated): the figures a fidelity gate compares, in print order; gated ones are the F1s."""
        out = []
        for s in self.splits:
            out += [(f"{s.split} erroneous acc.", s.error_accuracy, False),
                    (f"{s.split} correct acc.", s.correct_accuracy, False), (f"{s.split} F1", s.f1, True)]
        if len(self.splits) > 1:
            out.append((f"average F1 ({len(self.splits)} splits)", self.average_f1, True))
        cal = self.calibration[-1]
        out += [("step ECE (x100)", None if cal.ece is None else 100 * cal.ece, False),
                ("step AUROC (x100)", None if cal.auroc is None else 100 * cal.auroc, False)]
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def format_report(r: ProcessBenchReport) -> str:
    """The table papers print (erroneous / correct / F1 per split, the average F1), then truncation, calibration
    and the threshold sweep."""
    head = ["split", "rows", "erroneous", "correct", "F1", "truncated", "step ECE", "step AUROC"]
    body = []
    for s, cal in zip(r.splits, r.calibration):
        body.append([s.split, str(s.n), f"{cell(s.error_accuracy)} ({s.n_erroneous})",
                     f"{cell(s.correct_accuracy)} ({s.n_correct})", cell(s.f1), str(s.truncated),
                     cell(cal.ece, 3), cell(cal.auroc, 3)])
    if len(r.splits) > 1:
        cal = r.calibration[-1]
        body.append(["average", str(sum(s.n for s in r.splits)), "", "", cell(r.average_f1), "",
                     cell(cal.ece, 3), cell(cal.auroc, 3)])
    lines = [f"ProcessBench, {r.scorer}: first step with reward < {r.threshold:g} (erroneous / correct accuracy "
             "and F1 in %; (n) = rows)", *table(head, body)]
    if r.absent_splits:
        lines.append(f"absent splits (not in the data given): {', '.join(r.absent_splits)}")
    cal = r.calibration[-1]
    lines += ["", f"reliability of step rewards ({cal.n_steps} labelled steps of {cal.name}, {cal.n_wrong} wrong; "
              "steps after a first error are unlabelled)",
              *table(["reward bin", "steps", "mean reward", "fraction correct"],
                     [[f"[{lo:.1f}, {hi:.1f}{']' if hi == 1 else ')'}", str(n), f"{conf:.3f}", f"{acc:.3f}"]
                      for lo, hi, n, conf, acc in cal.bins])]
    lines += ["", "threshold sweep (tuned on this data: optimistic, not the headline figure)",
              *table(["split", "F1-optimal threshold", "F1 there", *[f"{g:g}" for g in SWEEP_GRID[1::2]]],
                     [[s.split, f"{s.threshold:.4g} [{s.low:.4g}, {s.high:.4g}]", cell(s.f1),
                       *[cell(v) for _, v in s.grid[1::2]]] for s in r.sweep])]
    return "\n".join(lines)



# -- the task the gate runs ---------------------------------------------------------------------------------------
class ProcessBenchTask:
    """ProcessBench rows as an evaluation `edgeprm.eval.gate` runs: scorer inputs, keys, report, per-row fields."""

    name = "processbench"

    def __init__(self, by_split: dict[str, list[ProcessBenchRow]], threshold: float = THRESHOLD,
                 absent: Sequence[str] = ()):
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ValueError(f"threshold must be in [0, 1] (step rewards are probabilities); got {threshold}")
        self.by_split, self.threshold, self.absent = by_split, float(threshold), tuple(absent)
        self.rows = [r for rows in by_split.values() for r in rows]
        self.inputs = [r.as_input() for r in self.rows]
        self.keys = [r.key for r in self.rows]

    def _split_rewards(self, results: Sequence[dict]) -> dict[str, tuple[list, list]]:
        out, i = {}, 0
        for split, rows in self.by_split.items():
            out[split] = (rows, [r["step_rewards"] for r in results[i : i + len(rows)]])
            i += len(rows)
        return out

    def predictions(self, results: Sequence[dict]) -> list[int]:
        return predict(self.rows, [r["step_rewards"] for r in results], self.threshold)

    def evaluate(self, results: Sequence[dict], scorer, name: str) -> ProcessBenchReport:
        from edgeprm.eval.calibration import calibration, labelled_steps

        by_split = self._split_rewards(results)
        splits, cals, every = [], [], ([], [])
        for split, (rows, rewards) in by_split.items():
            truncated = sum(any(r is None for r in rw) for rw in rewards)
            splits.append(score_split(rows, predict(rows, rewards, self.threshold), split, truncated))
            steps, labels = labelled_steps([r.label for r in rows], rewards)
            cals.append(calibration(steps, labels, split))
            every[0].extend(steps)
            every[1].extend(labels)
        cals.append(calibration(*every, "all"))
        return ProcessBenchReport(name, self.threshold, tuple(splits), average_f1(splits),
                                  tuple(threshold_sweep(by_split)), tuple(cals), self.absent)

    def extra(self, results: Sequence[dict]):
        preds = self.predictions(results)
        return lambda i: {"id": self.rows[i].id, "split": self.rows[i].split, "label": self.rows[i].label,
                          "prediction": preds[i]}

    def parity_rows(self, results: Sequence[dict]) -> list[dict]:
        return [{"id": k, "problem": r.problem, **res} for k, r, res in zip(self.keys, self.rows, results)]

    def agreement(self, reference: Sequence[dict], candidate: Sequence[dict]) -> list[tuple[str, float]]:
        """The share of rows (in %) whose predicted first error is the reference's."""
        a, b = self.predictions(reference), self.predictions(candidate)
        return [("first-error agreement", 100.0 * float(np.mean([x == y for x, y in zip(a, b)])))]

    @staticmethod
    def format(report: ProcessBenchReport) -> str:
        return format_report(report)
