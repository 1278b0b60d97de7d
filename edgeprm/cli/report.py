"""`edgeprm report SCORED -o report.html [--png DIR]`: one offline HTML page of what the PRM thinks of a file.

Score histograms per source (`--by FIELD`, optionally `--by-pattern REGEX` to take part of it: `--by id
--by-pattern '/(.+)$'` groups GSM8K rows by solver), step-reward curves of sample trajectories, where the first
doubted step falls, and with `is_correct` labels Best-of-N accuracy and calibration. See edgeprm/report.
"""

from __future__ import annotations

import sys

from edgeprm.select.policy import SCORE_FIELDS


def run(args) -> int:
    from edgeprm.report import ReportOptions, build_report

    opts = ReportOptions(by=args.by, by_pattern=args.by_pattern, group_key=args.group_key, score_field=args.score,
                         alpha=args.alpha, doubt=args.doubt, samples=args.samples, seed=args.seed, bins=args.bins)
    d = build_report(args.input, args.output, opts, args.png)
    print(f"edgeprm report: {d.rows} rows, {len(d.sources)} sources"
          f"{', Best-of-N and calibration' if d.has_labels else ''} -> {args.output}"
          f"{' (PNGs in ' + args.png + ')' if args.png else ''}", file=sys.stderr)
    return 0


def add_arguments(p) -> None:
    p.add_argument("input", help="scored JSONL or Parquet (edgeprm score / select output)")
    p.add_argument("-o", "--output", required=True, help="the HTML file (self-contained)")
    p.add_argument("--png", default=None, metavar="DIR", help="also write every figure as a PNG in DIR")
    p.add_argument("--by", default=None, metavar="FIELD",
                   help="field naming each row's source (default: 'source', 'generator' or 'model')")
    p.add_argument("--by-pattern", default=None, metavar="REGEX",
                   help="the source is this regex's first group in the --by field")
    p.add_argument("--group-key", default="group", help="field grouping a problem's candidates (else the problem)")
    p.add_argument("--score", choices=SCORE_FIELDS, default="score", help="what the histograms and picks use")
    p.add_argument("--alpha", type=float, default=1.0, help="trajectory-reward weight of --score reasonflux")
    p.add_argument("--doubt", type=float, default=0.5, help="a step rewarded below this is doubted")
    p.add_argument("--samples", type=int, default=24, help="trajectories drawn in the step-curve figure")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--bins", type=int, default=10, help="calibration bins")
