"""`edgeprm eval processbench|bon`: the figures the field publishes, for a model and (with --compare) its variants.

    edgeprm eval processbench [--split gsm8k|math|olympiadbench|omnimath|all] [--data PATH] [--threshold 0.5]
    edgeprm eval bon FILE
    ... --model M [every `edgeprm score` option] [--compare VARIANT...] [--max-drop X] [--json]
        [--predictions PATH [--resume]]

The work is in `edgeprm.eval` (processbench.py, bon.py, gate.py); this module reads the flags. Exit codes: 0, 1 when
a variant loses more than --max-drop points on a gated figure, 2 for bad input. Torch-free at import, so an ONNX
bundle is evaluated where only onnxruntime is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeprm.cli.options import add_scorer_options, scorer_config

TASKS = ("processbench", "bon")


def _task(args):
    if args.task == "processbench":
        from edgeprm.eval.processbench import ProcessBenchTask, read_processbench

        by_split, absent = read_processbench(args.data, args.split)
        if args.limit is not None:
            by_split = {s: rows[: args.limit] for s, rows in by_split.items()}
        if absent:
            print(f"edgeprm: ProcessBench splits not in {args.data}: {', '.join(absent)} (the average covers "
                  f"{', '.join(by_split)})", file=sys.stderr)
        return ProcessBenchTask(by_split, args.threshold, absent)
    from edgeprm.eval.bon import BonTask, read_bon_rows
    from edgeprm.rows import group_rows

    rows = read_bon_rows(args.input, args.label_key)
    if args.limit is not None:
        keep = sorted(i for g in list(group_rows(rows, args.group_key).values())[: args.limit] for i in g)
        rows = [rows[i] for i in keep]
    return BonTask(rows, args.group_key, args.answer_key, args.label_key)


def run(args) -> int:
    from edgeprm.eval.gate import format_gate, gate, parse_variants, reference_variant, run_variant

    if args.max_drop is not None and not args.compare:
        raise ValueError("--max-drop needs --compare VARIANT...: it limits what a variant may lose against --model")
    if args.max_drop is not None and args.max_drop < 0:
        raise ValueError(f"--max-drop is a number of points >= 0; got {args.max_drop}")
    if args.resume and args.predictions is None:
        raise ValueError("--resume continues a --predictions file; pass --predictions PATH")
    reference = reference_variant(args.model, scorer_config(args))
    variants = parse_variants(args.compare or [], reference)  # checked before any model loads
    task = _task(args)
    predictions = Path(args.predictions) if args.predictions else None
    progress = not args.quiet
    if not variants:
        run_, _ = run_variant(task, reference, predictions, args.resume, progress)
        print(json.dumps(run_.to_dict(), indent=2) if args.json else
              task.format(run_.report) + f"\n({run_.rows} rows scored, {run_.resumed} resumed; load "
                                         f"{run_.load_seconds:.1f} s, score {run_.score_seconds:.1f} s)")
        return 0
    report = gate(task, reference, variants, args.max_drop, predictions, args.resume, progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(task.format(report.reference.report))
        print()
        print(format_gate(report))
    failures = report.failures()
    for f in failures:
        print(f"edgeprm: fidelity gate failed: {f}", file=sys.stderr)
    return 1 if failures else 0


def _common(p: argparse.ArgumentParser, separator_flag: str = "--split") -> None:
    add_scorer_options(p, separator_flag)
    g = p.add_argument_group("evaluation options")
    g.add_argument("--compare", nargs="+", metavar="VARIANT", default=None,
                   help="also evaluate variants of --model: int8 | int4 (quantized), bf16 | fp16 (dtype), an ONNX "
                        "bundle directory, or another checkpoint; prints the figures side by side")
    g.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                   help="exit 1 when a variant loses more than this many points on a gated figure")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g.add_argument("--predictions", default=None, metavar="PATH",
                   help="write per-row predictions (JSONL); a variant's go beside it (PATH.int8.jsonl)")
    g.add_argument("--resume", action="store_true", help="keep the rows already in --predictions, score the rest")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N rows of each split (processbench) or N problems (bon): a quick look")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgeprm.eval.processbench import SPLITS, THRESHOLD

    sub = p.add_subparsers(dest="task", required=True, metavar="TASK")
    pb = sub.add_parser("processbench", help="ProcessBench: find the first wrong step (F1 per split)",
                        description="ProcessBench: a solution's predicted first error is its first step with reward "
                                    "below --threshold (or none); accuracy on erroneous and on all-correct solutions "
                                    "and their harmonic mean F1, per split and averaged; a threshold sweep and the "
                                    "ECE of step rewards.")
    pb.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    pb.add_argument("--data", default=None, help="a file or a directory of <split>.json files in the official format "
                                                 "(default: the hub dataset Qwen/ProcessBench, or its local cache)")
    pb.add_argument("--threshold", type=float, default=THRESHOLD, help="a step below this reward is an error")
    _common(pb, "--step-separator")  # --split is the data set's split here
    bon = sub.add_parser("bon", help="Best-of-N accuracy per aggregation against majority vote, random and oracle",
                         description="Best-of-N accuracy on candidate rows grouped by problem, each with is_correct "
                                     "(JSONL rows, or the GSM8K model-solutions file), for every aggregation, "
                                     "against majority vote, random pick (expected value) and oracle.")
    bon.add_argument("input", help="JSONL rows {id?, problem, steps|solution, is_correct, group?, answer?}")
    bon.add_argument("--group-key", default="group", help="row field naming a problem's group (default: group; "
                                                          "rows without it group by problem text)")
    bon.add_argument("--answer-key", default="answer", help="row field holding the final answer (default: answer; "
                                                            "else it is read from the last step)")
    bon.add_argument("--label-key", default="is_correct", help="row field saying whether a candidate is correct")
    _common(bon)
