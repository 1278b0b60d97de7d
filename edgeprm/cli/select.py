"""`edgeprm select IN -o OUT --top-k K | --top-fraction F | --threshold T`: keep the best trajectories of a file.

Scores the input first unless it is already scored (its rows have the fields `--score` reads; `--rescore` scores
anyway), with every model and scoring option `edgeprm score` takes, in this process or on Ray Data (`--ray`).
JSONL or Parquet in and out (by file name), atomic output, `--resume` after a kill, and a summary printed and
written to OUT.summary.json. The job itself is `edgeprm.select.pipeline.select_file`.
"""

from __future__ import annotations

import sys

from edgeprm.cli.options import add_ray_options, add_scorer_options, ray_scoring, scorer_config
from edgeprm.select.policy import SCORE_FIELDS, SelectRule


def run(args) -> int:
    from edgeprm.select.pipeline import LocalScoring, select_file

    rule = SelectRule(top_k=args.top_k, top_fraction=args.top_fraction, threshold=args.threshold,
                      score_field=args.score, alpha=args.alpha, group_key=args.group_key,
                      contiguous_groups=args.contiguous_groups)

    def scoring():  # called only when the input needs scoring: a scored file loads no model
        if args.ray is not None:
            return ray_scoring(args)
        import edgeprm

        return LocalScoring(edgeprm.load(args.model, config=scorer_config(args)), args.chunk_rows)

    summary = select_file(args.input, args.output, rule, scoring, resume=args.resume, rescore=args.rescore,
                          scored_output=args.scored_output, progress=not args.quiet)
    print("edgeprm select: " + summary.text().replace("\n", "\n  "), file=sys.stderr)
    return 0


def add_arguments(p) -> None:
    p.description = ("Keep the best rows of a JSONL or Parquet file of trajectories, scoring it first unless it is "
                     "already scored. Rows: as for `edgeprm score`; output rows are scored rows.")
    p.add_argument("input", help="input JSONL or Parquet (scored or not)")
    p.add_argument("-o", "--output", required=True, help="output JSONL or Parquet (written atomically)")
    g = p.add_argument_group("what to keep (one of)").add_mutually_exclusive_group(required=True)
    g.add_argument("--top-k", type=int, default=None, metavar="K", help="the K best rows of each group")
    g.add_argument("--top-fraction", type=float, default=None, metavar="F",
                   help="the best floor(F x rows) rows overall (two passes over the scored rows)")
    g.add_argument("--threshold", type=float, default=None, metavar="T", help="every row scoring >= T")
    s = p.add_argument_group("ranking")
    s.add_argument("--score", choices=SCORE_FIELDS, default="score",
                   help="what rows are ranked by: the scorer's aggregation ('score'), the trajectory reward, or an "
                        "aggregation of the step rewards (reasonflux uses --alpha)")
    s.add_argument("--group-key", default="problem", help="field that groups rows for --top-k (a row without it "
                                                           "groups by its problem)")
    s.add_argument("--contiguous-groups", action="store_true",
                   help="the rows of a group are adjacent: select each group when it ends (memory of one group)")
    add_scorer_options(p)
    p.add_argument("--chunk-rows", type=int, default=128, help="rows read, scored and written at a time")
    p.add_argument("--resume", action="store_true", help="keep the rows scored by a killed run and score the rest")
    p.add_argument("--rescore", action="store_true", help="score the input even if it is already scored")
    p.add_argument("--scored-output", default=None, metavar="PATH",
                   help="also keep every scored row in PATH (JSONL or Parquet; default: not kept)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_ray_options(p)
