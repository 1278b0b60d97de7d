"""`edgeprm parity REFERENCE.jsonl CANDIDATE.jsonl...`: fidelity of score files (`edgeprm.eval.parity`)."""

from __future__ import annotations

import json
import sys


def run(args) -> int:
    from edgeprm.eval.parity import compare_files, format_table

    reports = compare_files(args.reference, args.candidates, args.group_key)
    if args.json:
        print(json.dumps({"reference": args.reference, "candidates": [r.to_dict() for r in reports]}, indent=2))
    else:
        print(format_table(reports, args.reference))
    if not all(r.complete for r in reports):
        print("edgeprm: some rows did not align (listed above); figures cover the aligned rows", file=sys.stderr)
    return 0


def add_arguments(p) -> None:
    p.description = ("Per-step |delta|, Spearman/Kendall of scores, pairwise order and Best-of-N top-1 agreement, "
                     "Best-of-N accuracy when rows carry is_correct.")
    p.add_argument("reference", help="scores from the full-precision model (output of `edgeprm score`)")
    p.add_argument("candidates", nargs="+", metavar="CANDIDATE", help="scores of the same rows to compare")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--group-key", default="group",
                   help="row field naming a Best-of-N group (default: group; rows without it group by problem)")
