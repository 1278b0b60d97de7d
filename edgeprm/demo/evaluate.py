"""Held-out evaluation of a PRM on synthetic arithmetic solutions (`edgeprm.demo.synthetic`).

Figures, from one list of step rewards per record:
- step AUROC: how well `1 - reward` ranks bad steps above good ones, over every step of every solution;
- first-error exact: over erroneous solutions, the share whose first step with reward < 0.5 is the labelled first
  error (no earlier false alarm, no miss);
- Best-of-N accuracy of PRM selection (the candidate with the highest *minimum* step reward: one bad step sinks a
  chain, and the minimum is also the scorer's default score for step classifiers) against random pick (expected
  value: the share of correct candidates) and majority vote over final answers (ties broken at random, expected
  value).

    python -m edgeprm.demo.evaluate [MODEL_DIR] [--problems 500] [--seed 424242]

scores held-out problems through `edgeprm.load(MODEL_DIR).score_batch(...)` (the bundled demo PRM by default), so it
measures the shipped artifact, not the training code.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from edgeprm.demo.synthetic import ERROR_KINDS, generate, group_by_problem
from edgeprm.stats import auroc, best_index

# Held-out data seeds. Training data uses seeds >= 1_000_000 (see edgeprm.demo.train), so these are never trained on.
HELDOUT_SEED = 424_242
VALIDATION_SEED = 31_337  # progress prints during training
THRESHOLD = 0.5
# The figures the bundled demo PRM must reach on held-out data.
DEMO_BARS = {"step_auroc": 0.95, "first_error_exact": 0.85, "bon_minus_majority": 0.10, "bon_minus_random": 0.20}


def first_flagged(rewards: Sequence[float], threshold: float = THRESHOLD) -> int | None:
    """Index of the first step the model doubts (reward < threshold), or None."""
    return next((i for i, r in enumerate(rewards) if r < threshold), None)


def majority_vote_accuracy(group: list[dict]) -> float:
    """Expected accuracy of majority voting over final answers, ties broken uniformly at random."""
    counts = Counter(r["answer"] for r in group)
    top = max(counts.values())
    winners = [a for a, c in counts.items() if c == top]
    return (group[0]["gold_answer"] in winners) / len(winners)


def figures(records: list[dict], step_rewards: list[list[float]]) -> dict:
    """All held-out figures from per-record step rewards (same order as `records`)."""
    if len(records) != len(step_rewards):
        raise ValueError(f"need one reward list per record; got {len(step_rewards)} for {len(records)} records")
    scores, labels = [], []
    exact, n_wrong, false_alarm = 0, 0, 0
    by_kind: dict[str, list[int]] = {k: [] for k in ERROR_KINDS}
    for rec, rw in zip(records, step_rewards):
        if len(rw) != len(rec["steps"]):
            raise ValueError(f"record {rec['id']!r} has {len(rec['steps'])} steps but {len(rw)} rewards")
        scores += [1.0 - r for r in rw]
        labels += [1 - lab for lab in rec["step_labels"]]  # positive = bad step
        flagged = first_flagged(rw)
        if rec["first_error"] is None:
            false_alarm += flagged is not None
        else:
            n_wrong += 1
            exact += flagged == rec["first_error"]
            by_kind[rec["error_kind"]].append(flagged == rec["first_error"])
    by_id = {rec["id"]: min(rw) for rec, rw in zip(records, step_rewards)}
    bon, rand, maj, oracle = [], [], [], []
    for group in group_by_problem(records):
        best = best_index([by_id[r["id"]] for r in group])
        bon.append(float(group[best]["is_correct"]))
        rand.append(float(np.mean([r["is_correct"] for r in group])))
        maj.append(majority_vote_accuracy(group))
        oracle.append(float(any(r["is_correct"] for r in group)))
    n_correct = len(records) - n_wrong
    return {
        "problems": len(bon),
        "solutions": len(records),
        "steps": len(scores),
        "step_auroc": auroc(scores, labels),
        "first_error_exact": exact / max(n_wrong, 1),
        "first_error_exact_by_kind": {k: float(np.mean(v)) if v else float("nan") for k, v in by_kind.items()},
        "correct_solution_false_alarm": false_alarm / max(n_correct, 1),
        "bon_prm_min": float(np.mean(bon)),
        "bon_random": float(np.mean(rand)),
        "bon_majority": float(np.mean(maj)),
        "bon_oracle": float(np.mean(oracle)),
    }


def check_bars(f: dict) -> list[str]:
    """The bars a figure set misses, as readable lines (empty when all hold)."""
    missed = []
    if not f["step_auroc"] >= DEMO_BARS["step_auroc"]:
        missed.append(f"step AUROC {f['step_auroc']:.3f} < {DEMO_BARS['step_auroc']}")
    if not f["first_error_exact"] >= DEMO_BARS["first_error_exact"]:
        missed.append(f"first-error exact {f['first_error_exact']:.3f} < {DEMO_BARS['first_error_exact']}")
    if not f["bon_prm_min"] >= f["bon_majority"] + DEMO_BARS["bon_minus_majority"]:
        missed.append(f"Best-of-N {f['bon_prm_min']:.3f} < majority {f['bon_majority']:.3f} + "
                      f"{DEMO_BARS['bon_minus_majority']}")
    if not f["bon_prm_min"] >= f["bon_random"] + DEMO_BARS["bon_minus_random"]:
        missed.append(f"Best-of-N {f['bon_prm_min']:.3f} < random {f['bon_random']:.3f} + "
                      f"{DEMO_BARS['bon_minus_random']}")
    return missed


def evaluate(model=None, n_problems: int = 500, seed: int = HELDOUT_SEED, candidates: int = 4,
             progress: bool = False) -> dict:
    """Score `n_problems` held-out problems and return the figures. `model`: a loaded scorer, or a directory for
    `edgeprm.load` (None = bundled demo PRM)."""
    import edgeprm

    records = generate(n_problems, candidates=candidates, seed=seed)
    scorer = model if hasattr(model, "score_batch") else edgeprm.load(model, device="cpu")
    t0 = time.perf_counter()
    results = scorer.score_batch(records, progress=progress)
    out = figures(records, [r.step_rewards for r in results])
    out["seed"] = seed
    out["score_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def format_figures(f: dict) -> str:
    return (f"held-out: {f['problems']} problems, {f['solutions']} solutions, {f['steps']} steps\n"
            f"  step AUROC (bad steps)        {f['step_auroc']:.4f}\n"
            f"  first error found exactly     {100 * f['first_error_exact']:.1f}%  ("
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in f["first_error_exact_by_kind"].items()) + ")\n"
            f"  false alarm on correct chains {100 * f['correct_solution_false_alarm']:.1f}%\n"
            f"  Best-of-{round(f['solutions'] / max(f['problems'], 1))} accuracy: PRM (min step reward) "
            f"{100 * f['bon_prm_min']:.1f}% | majority vote {100 * f['bon_majority']:.1f}% | "
            f"random {100 * f['bon_random']:.1f}% | oracle {100 * f['bon_oracle']:.1f}%")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeprm.demo.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=None, help="PRM directory (default: the bundled demo PRM)")
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--seed", type=int, default=HELDOUT_SEED)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    f = evaluate(args.model, args.problems, args.seed)
    print(json.dumps(f, indent=2) if args.json else format_figures(f))
    missed = check_bars(f)
    for m in missed:
        print("below bar:", m)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
