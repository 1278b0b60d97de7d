"""The report's figures, drawn with matplotlib (Agg, no display) and returned as PNG bytes.

Each function takes `edgeprm.report.data.ReportData` and returns a `Figure` record (name, title, caption, PNG) or
None when the data has nothing to show (no labels: no Best-of-N, no calibration).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from edgeprm.report.data import ALL, ReportData

MAX_SOURCES = 8  # histograms drawn one per source; the rest are pooled as "other"
COLORS = {"correct": "#2a9d4b", "incorrect": "#d1495b", ALL: "#3b6ea8"}
DPI = 110
LOG_SPAN = 1e3  # max / min score beyond which the histogram bins and axis are logarithmic


@dataclass(frozen=True)
class Figure:
    name: str      # file stem for --png DIR
    title: str
    caption: str
    png: bytes


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError('reports need matplotlib: pip install "edgeprm[plot]"') from None
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def score_histograms(d: ReportData) -> Figure | None:
    """The score distribution of each source, on shared bins (densities, so sources of any size compare)."""
    if not d.scores:
        return None
    plt = _plt()
    names = [s.name for s in d.sources if s.name in d.scores]
    shown, rest = names[:MAX_SOURCES], names[MAX_SOURCES:]
    series = {n: d.scores[n] for n in shown}
    if rest:
        series[f"other ({len(rest)} sources)"] = np.concatenate([d.scores[n] for n in rest])
    allv = np.concatenate(list(series.values()))
    lo, hi = float(allv.min()), float(allv.max())
    # Scores spread over orders of magnitude (a min-aggregated PRM far from its training data) read on a log axis.
    log = lo > 0 and hi / lo > LOG_SPAN
    bins = np.geomspace(lo, hi, 31) if log else np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for name, v in series.items():
        _, _, patches = ax.hist(v, bins=bins, density=not log, histtype="step", linewidth=1.8,
                                weights=np.full(len(v), 1.0 / len(v)) if log else None, label=f"{name} (n={len(v)})")
        ax.axvline(float(np.median(v)), linestyle=":", linewidth=1.0, color=patches[0].get_edgecolor())
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(f"{d.options.score_field}" + (" (log scale)" if log else ""))
    ax.set_ylabel("fraction of rows per bin" if log else "density")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return Figure("score_distribution", "Score distribution per source",
                  f"Histogram of '{d.options.score_field}' for each source (dotted: median). Sources whose mass sits "
                  "further right are the ones the PRM prefers.", _png(fig))


def step_curves(d: ReportData) -> Figure | None:
    """Step rewards of the sampled trajectories, one line each."""
    curves = [s for s in d.samples if s["step_rewards"]]
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    src_color = {name: cycle[i % len(cycle)] for i, name in enumerate(s.name for s in d.sources)}
    for s in curves:
        y = [np.nan if r is None else r for r in s["step_rewards"]]
        x = np.arange(1, len(y) + 1)
        if s["is_correct"] is None:
            color = src_color.get(s["source"], COLORS[ALL])
        else:
            color = COLORS["correct" if s["is_correct"] else "incorrect"]
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.0, alpha=0.7, color=color)
    ax.axhline(d.options.doubt, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("step reward")
    ax.grid(alpha=0.25)
    if d.has_labels:
        for k in ("correct", "incorrect"):
            ax.plot([], [], color=COLORS[k], label=k)
        ax.legend(fontsize=8, frameon=False)
    return Figure("step_curves", "Step-reward curves of sample trajectories",
                  f"{len(curves)} trajectories drawn at random (seed {d.options.seed}); dashed: the doubt line "
                  f"{d.options.doubt:g}." + (" Green: correct final answer, red: wrong." if d.has_labels else ""),
                  _png(fig))


def first_doubt(d: ReportData) -> Figure | None:
    """Where the first step rewarded below the doubt line falls, and how often no step is."""
    if not d.first_doubt:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.0))
    found = [p for v in d.first_doubt.values() for p in v if p is not None]
    top = min(max(found, default=1), 20)
    labels = [str(i) for i in range(1, top + 1)] + [f">{top}"] * (max(found, default=0) > top) + ["never"]
    x = np.arange(len(labels))
    kinds = [k for k in ("correct", "incorrect", ALL) if k in d.first_doubt]
    width = 0.8 / len(kinds)
    for i, k in enumerate(kinds):
        v = d.first_doubt[k]
        counts = [sum(1 for p in v if p == j) for j in range(1, top + 1)]
        if len(labels) == top + 2:
            counts.append(sum(1 for p in v if p is not None and p > top))
        counts.append(sum(1 for p in v if p is None))
        frac = np.asarray(counts, dtype=float) / max(len(v), 1)
        ax.bar(x + (i - (len(kinds) - 1) / 2) * width, frac, width, label=f"{k} (n={len(v)})",
               color=COLORS.get(k))
    ax.set_xticks(x, labels)
    ax.set_xlabel(f"first step with reward < {d.options.doubt:g}")
    ax.set_ylabel("fraction of trajectories")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25, axis="y")
    return Figure("first_doubt", "Position of the first doubted step",
                  "For each trajectory, the first step the PRM rewards below the doubt line; 'never' when it doubts "
                  "none. A good PRM doubts wrong solutions early and leaves correct ones alone.", _png(fig))


def best_of_n(d: ReportData) -> Figure | None:
    """Best-of-N accuracy of the PRM's pick against N, with a random pick and an oracle."""
    if not d.best_of_n:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    n = [r["n"] for r in d.best_of_n]
    for key, style in (("oracle", ":"), ("prm", "-"), ("random", "--")):
        ax.plot(n, [100 * r[key] for r in d.best_of_n], style, marker="o", label={"prm": "PRM pick"}.get(key, key))
    ax.set_xticks(n)
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return Figure("best_of_n", "Best-of-N accuracy",
                  "Expected accuracy over all N-subsets of each problem's candidates (exact, not sampled): the "
                  "PRM's pick, a random pick, and an oracle that picks a correct one whenever there is one.",
                  _png(fig))


def calibration(d: ReportData) -> Figure | None:
    """Fraction correct against the score, per score bin."""
    if not d.calibration:
        return None
    plt = _plt()
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(6.5, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ms = [b["mean_score"] for b in d.calibration]
    ax.plot(ms, [b["correct"] for b in d.calibration], label="PRM")
    # Marker area by rows in the bin: a bin of three rows should not read like one of three thousand.
    counts = np.asarray([b["count"] for b in d.calibration], dtype=float)
    ax.scatter(ms, [b["correct"] for b in d.calibration], s=12 + 180 * np.sqrt(counts / counts.max()), zorder=3)
    if d.ece is not None:
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    ax.set_ylabel("fraction correct")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    axc.bar([(b["lo"] + b["hi"]) / 2 for b in d.calibration], [b["count"] for b in d.calibration],
            width=[0.9 * (b["hi"] - b["lo"]) for b in d.calibration], color="#999999")
    axc.set_xlabel(d.options.score_field)
    axc.set_yscale("log")
    axc.set_ylabel("rows (log)")
    ece = f" Expected calibration error {d.ece:.3f}." if d.ece is not None else ""
    return Figure("calibration", "Calibration",
                  f"Rows binned by score ({d.options.bins} equal-width bins); the fraction with a correct final "
                  f"answer in each bin against its mean score (marker area: rows in the bin).{ece}", _png(fig))


FIGURES = (score_histograms, step_curves, first_doubt, best_of_n, calibration)


def draw_all(d: ReportData) -> list[Figure]:
    return [f for f in (draw(d) for draw in FIGURES) if f is not None]
