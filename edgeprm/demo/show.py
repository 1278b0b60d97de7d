"""What `edgeprm demo` shows: the bundled demo PRM finding wrong steps and picking answers, offline, on a CPU.

1. Scores the bundled example solutions (edgeprm/assets/demo_examples.jsonl: synthetic problems with several
   candidate solutions each, some with one injected error), prints every step with its reward, marks the first step
   the model doubts (reward < 0.5) and the candidate it would pick.
2. Best-of-N on held-out synthetic problems (a data seed never used in training): accuracy of the PRM's pick against
   a random pick and a majority vote over final answers.
3. With `--search`: step-level beam search against Best-of-N on held-out problems, accuracy and backbone tokens
   (`edgeprm.demo.search`).

`--plot FILE.png` also draws the step-reward curves of the example solutions (needs matplotlib: `pip install
"edgeprm[plot]"`). `--model` runs the same demo with another step-classifier checkpoint. The command's flags are in
`edgeprm.cli.demo`; this module does the work.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edgeprm.loading import ASSETS
from edgeprm.rows import group_rows, read_jsonl
from edgeprm.stats import best_index

EXAMPLES = ASSETS / "demo_examples.jsonl"
DOUBT = 0.5  # a step with a reward below this is one the model doubts
EXAMPLES_SEED = 2_024  # data seed of the bundled examples (below the training seeds, like every held-out seed)


def example_rows(n_problems: int = 3, seed: int = EXAMPLES_SEED) -> list[dict]:
    """The bundled examples: the first problems of `seed` whose candidates mix correct and wrong solutions with
    at least two kinds of injected error (chosen from the data alone, never from a model's scores)."""
    from edgeprm.demo.synthetic import generate, group_by_problem

    chosen: list[dict] = []
    for group in group_by_problem(generate(40 * n_problems, seed=seed)):
        kinds = {r["error_kind"] for r in group if not r["is_correct"]}
        if any(r["is_correct"] for r in group) and len(kinds) >= 2:
            chosen += group
            if len(chosen) == n_problems * len(group):
                return chosen
    raise ValueError(f"seed {seed} has fewer than {n_problems} suitable problems")


def write_examples(path: Path = EXAMPLES) -> None:
    """Regenerate the bundled examples file:
    `python -c "from edgeprm.demo.show import write_examples; write_examples()"`."""
    with open(path, "w", encoding="utf-8") as f:
        for row in example_rows():
            f.write(json.dumps(row) + "\n")


def read_examples(path: Path) -> list[dict]:
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no example rows")
    return rows


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _groups(rows: list[dict], results) -> list[list[tuple[dict, object]]]:
    """(row, result) pairs grouped by problem (`problem_id`, else the problem text), in first-seen order."""
    return [[(rows[i], results[i]) for i in idx] for idx in group_rows(rows, "problem_id").values()]


def format_examples(rows: list[dict], results, width: int = 100) -> str:
    """Every candidate's steps with rewards, the first doubted step marked, the PRM's pick per problem."""
    lines = []
    for k, group in enumerate(_groups(rows, results), 1):
        lines.append(f"Problem {k}: {group[0][0]['problem']}")
        best = best_index([res.score for _, res in group])
        for i, (row, res) in enumerate(group):
            truth = ""
            if "is_correct" in row:
                truth = ("correct" if row["is_correct"] else
                         f"wrong from step {row['first_error'] + 1} ({row.get('error_kind', 'error')})"
                         if row.get("first_error") is not None else "wrong")
            pick = "   <- PRM's pick" if i == best else ""
            lines.append(f"  candidate {chr(65 + i)}: score {res.score:.3f}{f'  [{truth}]' if truth else ''}{pick}")
            doubted = next((j for j, r in enumerate(res.step_rewards) if r is not None and r < DOUBT), None)
            for j, (step, reward) in enumerate(zip(row["steps"], res.step_rewards)):
                mark = "  <- first step the PRM doubts" if j == doubted else ""
                shown = "  cut" if reward is None else f"{reward:5.3f}"  # None: past the token limit
                lines.append(f"    {shown}  {_shorten(step, width - 14 - len(mark))}{mark}")
        lines.append("")
    return "\n".join(lines)


def format_best_of_n(f: dict, seed: int) -> str:
    n = round(f["solutions"] / max(f["problems"], 1))
    return "\n".join([
        f"Best-of-{n} on {f['problems']} held-out problems (data seed {seed}, never trained on):",
        f"  PRM pick (highest minimum step reward)  {100 * f['bon_prm_min']:5.1f}%",
        f"  majority vote over final answers        {100 * f['bon_majority']:5.1f}%",
        f"  random pick                             {100 * f['bon_random']:5.1f}%",
        f"  oracle (some candidate is correct)      {100 * f['bon_oracle']:5.1f}%",
        f"  step AUROC for bad steps {f['step_auroc']:.3f}; first wrong step found exactly in "
        f"{100 * f['first_error_exact']:.1f}% of wrong solutions",
    ])


def plot_examples(rows: list[dict], results, path: Path) -> None:
    """Step-reward curves of the example solutions, one panel per problem; x marks the labelled first error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ValueError('--plot needs matplotlib: pip install "edgeprm[plot]"') from None
    groups = _groups(rows, results)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False, sharey=True)
    for k, (ax, group) in enumerate(zip(axes[0], groups), 1):
        for i, (row, res) in enumerate(group):
            rewards = res.step_rewards
            xs = range(1, len(rewards) + 1)
            label = f"{chr(65 + i)}: {'correct' if row.get('is_correct') else 'wrong'}"
            (line,) = ax.plot(xs, rewards, marker="o", label=label,
                              linestyle="-" if row.get("is_correct") else "--")
            if row.get("first_error") is not None:
                e = row["first_error"]
                ax.plot([e + 1], [rewards[e]], marker="x", markersize=12, color=line.get_color())
        ax.axhline(DOUBT, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"problem {k}")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.03, 1.03)
        ax.legend(fontsize=8, loc="lower left")
    axes[0][0].set_ylabel("step reward")
    fig.suptitle("edgeprm demo PRM: step rewards (x = the injected first error)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(model=None, examples: Path = EXAMPLES, problems: int = 500, candidates: int = 4, seed: int | None = None,
             device: str = "cpu", plot: Path | None = None, search: int = 0) -> None:
    """Print the demo (see the module docstring); `model` None = the bundled demo PRM."""
    import edgeprm
    from edgeprm.demo.evaluate import HELDOUT_SEED, evaluate
    from edgeprm.families import Family
    from edgeprm.loading import default_model_dir

    t0 = time.perf_counter()
    scorer = edgeprm.load(model, device=device)
    if model is not None and scorer.family is not Family.STEP_CLASSIFIER:
        raise ValueError(f"the demo needs a step-classifier PRM; {model} is a {scorer.family.value} PRM")
    model_dir = Path(model) if model is not None else default_model_dir()
    info = model_dir / "training.json"
    about = ""
    if info.is_file():
        t = json.loads(info.read_text())
        about = (f" ({t['parameters'] / 1e6:.1f}M-parameter Qwen2 step classifier trained {t['train_seconds'] / 60:.0f}"
                 f" min on a CPU on synthetic arithmetic)")
    print(f"edgeprm demo: {model_dir}{about}\n")
    rows = read_examples(Path(examples))
    results = scorer.score_batch(rows)
    print(format_examples(rows, results))
    if plot:
        plot_examples(rows, results, Path(plot))
        print(f"step-reward curves -> {plot}\n")
    if problems > 0:
        seed = HELDOUT_SEED if seed is None else seed
        f = evaluate(scorer, problems, seed, candidates, progress=sys.stderr.isatty())
        print(format_best_of_n(f, seed))
    if search > 0:
        from edgeprm.demo.search import compare, format_figures

        seed = HELDOUT_SEED if seed is None else seed
        print("\n" + format_figures(compare(scorer, search, seed=seed, progress=sys.stderr.isatty()), search))
    print(f"\n({time.perf_counter() - t0:.1f} s; full held-out figures against the bars: python -m "
          "edgeprm.demo.evaluate)")
