"""Command line: `edgeprm score IN.jsonl -o OUT.jsonl --model M`, and the other subcommands.

`score` streams: it reads a chunk of rows, scores it, appends the results to OUT.jsonl.part and flushes, so memory
does not grow with the file and a killed run loses at most one chunk. On success the part file is renamed to
OUT.jsonl in one step. `--resume` keeps the rows already in OUT.jsonl.part (or OUT.jsonl) and scores the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from edgeprm.demo import add_demo_parser
from edgeprm.encoding import Encoded, TooLongError
from edgeprm.export.onnx_export import add_export_parser
from edgeprm.parity import add_parity_parser
from edgeprm.quantized_checkpoint import add_quantize_parser
from edgeprm.trajectory import DEFAULT_SPLIT, Trajectory


class BadRow(ValueError):
    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


def _parse_row(line_no: int, text: str, split: str) -> tuple[dict, Trajectory]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRow(line_no, f"not valid JSON ({e.msg} at column {e.colno})") from None
    try:
        return row, Trajectory.from_dict(row, split)
    except ValueError as e:
        raise BadRow(line_no, str(e)) from None


def _written_keys(path: Path) -> tuple[set[str], int, list[str]]:
    """Ids already written, the count of id-less rows, and the valid lines (a torn last line is dropped)."""
    ids, anonymous, lines = set(), 0, []
    if not path.is_file():
        return ids, anonymous, lines
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # the kill came mid-line: everything after is rescored
            lines.append(line if line.endswith("\n") else line + "\n")
            if row.get("id") is None:
                anonymous += 1
            else:
                ids.add(str(row["id"]))
    return ids, anonymous, lines


def _count_lines(path: Path) -> int | None:
    if str(path) == "-":
        return None
    with path.open("rb") as f:
        return sum(1 for _ in f)


def cmd_score(args) -> int:
    import edgeprm

    out = Path(args.output)
    part = out.with_name(out.name + ".part")
    errors = out.with_name(out.name + ".errors.jsonl")
    done_ids, done_anon, kept = set(), 0, []
    if args.resume:
        source = part if part.is_file() else out
        done_ids, done_anon, kept = _written_keys(source)
    elif part.exists():
        print(f"edgeprm: {part} holds an unfinished run; pass --resume to continue it, or delete it", file=sys.stderr)
        return 2
    scorer = edgeprm.load(args.model, quantization=args.quantization, backend=args.backend, device=args.device,
                          family=args.family, dtype=args.dtype, aggregation=args.aggregation, alpha=args.alpha,
                          max_length=args.max_length, truncate=args.truncate, split=args.split,
                          token_budget=args.token_budget)
    total = _count_lines(Path(args.input))
    stats = {"scored": 0, "resumed": len(kept), "bad": 0}
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    with part.open("w", encoding="utf-8") as fout:
        fout.writelines(kept)
        fout.flush()
        ferr = errors.open("a" if args.resume else "w", encoding="utf-8") if args.skip_bad else None
        chunk: list[tuple[dict, Trajectory, Encoded]] = []

        def flush():
            results = scorer.score_encoded([e for _, _, e in chunk], [t.id for _, t, _ in chunk])
            for (row, _, _), r in zip(chunk, results):
                row = {**row, "step_rewards": r.step_rewards, "trajectory_reward": r.trajectory_reward,
                       "score": r.score}
                if r.truncated:
                    row["truncated"] = True
                fout.write(json.dumps(row, ensure_ascii=False) + "\n")
            fout.flush()
            os.fsync(fout.fileno())
            stats["scored"] += len(chunk)
            chunk.clear()

        src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
        try:
            with tqdm(total=total, unit="row", desc="scoring", disable=args.quiet) as bar:
                for line_no, text in enumerate(src, 1):
                    bar.update(1)
                    if not text.strip():
                        continue
                    try:
                        row, traj = _parse_row(line_no, text, args.split)
                        if traj.id is not None and traj.id in done_ids:
                            continue
                        if traj.id is None and done_anon > 0:
                            done_anon -= 1
                            continue
                        try:
                            encoded = scorer.encoder.encode(traj, scorer.truncate)
                        except TooLongError as e:
                            raise BadRow(line_no, str(e)) from None
                    except BadRow as e:
                        if ferr is None:
                            flush()
                            print(f"edgeprm: bad row at {e}\n{stats['scored'] + stats['resumed']} scored rows are "
                                  f"kept in {part}; fix the row (or pass --skip-bad) and rerun with --resume",
                                  file=sys.stderr)
                            return 1
                        ferr.write(json.dumps({"line": e.line, "error": e.reason}) + "\n")
                        ferr.flush()
                        stats["bad"] += 1
                        continue
                    chunk.append((row, traj, encoded))
                    if len(chunk) >= args.chunk_rows:
                        flush()
                if chunk:
                    flush()
        finally:
            if src is not sys.stdin:
                src.close()
            if ferr is not None:
                ferr.close()
    os.replace(part, out)
    dt = time.perf_counter() - t0
    rate = stats["scored"] / dt if dt > 0 else 0.0
    print(f"edgeprm: {stats['scored']} rows scored, {stats['resumed']} kept from an earlier run, {stats['bad']} bad "
          f"rows{' (see ' + str(errors) + ')' if stats['bad'] else ''}; {dt:.1f} s, {rate:.1f} rows/s -> {out}",
          file=sys.stderr)
    return 0


def add_score_parser(sub) -> None:
    from edgeprm.kernels.step_head import AGGREGATIONS
    from edgeprm.loading import FAMILIES
    from edgeprm.scorer import BACKENDS, DTYPES, QUANTIZATIONS

    p = sub.add_parser("score", help="score a JSONL file of trajectories",
                       description="Rows: {id?, problem, steps: [...]} or {id?, problem, solution}, optional response."
                                   " Output rows = input + step_rewards, trajectory_reward, score.")
    p.add_argument("input", help="input JSONL ('-' for standard input)")
    p.add_argument("-o", "--output", required=True, help="output JSONL (written atomically)")
    p.add_argument("--model", default=None, help="checkpoint directory or hub id (default: the bundled demo PRM)")
    p.add_argument("--quantization", choices=[q for q in QUANTIZATIONS if q], default=None)
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--dtype", default="auto", choices=[*DTYPES, "auto"])
    p.add_argument("--family", choices=FAMILIES, default=None, help="override the detected PRM family")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default=None, help="how 'score' combines the rewards")
    p.add_argument("--alpha", type=float, default=1.0, help="weight of the trajectory reward in 'reasonflux'")
    p.add_argument("--split", default=DEFAULT_SPLIT, help="separator that splits a 'solution' into steps")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument("--truncate", action="store_true", help="score what fits; cut steps get null rewards")
    p.add_argument("--token-budget", type=int, default=8192, help="padded tokens per forward batch")
    p.add_argument("--chunk-rows", type=int, default=128, help="rows read, scored and written at a time")
    p.add_argument("--resume", action="store_true", help="keep rows already written and score the rest")
    p.add_argument("--skip-bad", action="store_true", help="record bad rows in OUT.errors.jsonl and go on")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_score)


# Subcommands live in their own modules; each exposes add_parser(subparsers).
SUBCOMMANDS = [add_demo_parser, add_score_parser, add_export_parser, add_parity_parser, add_quantize_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeprm", description="Process-reward-model scoring on small hardware.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"edgeprm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
