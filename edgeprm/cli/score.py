"""`edgeprm score IN.jsonl -o OUT.jsonl --model M`: score a file of trajectories, streaming and resumable.

It reads a chunk of rows, scores it, appends the results to OUT.jsonl.part and flushes, so memory does not grow with
the file and a killed run loses at most one chunk. On success the part file is renamed to OUT.jsonl in one step.
`--resume` keeps the rows already in OUT.jsonl.part (or OUT.jsonl) and scores the rest. Every row goes through the
public API: `scorer.prepare(row)` reports a bad row (with its line number) before any work is spent on it,
`scorer.score_prepared` scores a chunk, and `ScoreResult.to_dict` gives the fields added to the row.
Torch-free at import, so `--backend onnx` runs where only onnxruntime is installed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from edgeprm.cli.options import add_ray_options, add_scorer_options, ray_scoring, scorer_config
from edgeprm.rows import parse_line


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


def run_ray(args) -> int:
    """`--ray`: score on Ray Data (edgeprm/distributed), JSONL or Parquet in and out, the same rows as without it."""
    if args.input == "-" or args.skip_bad:
        raise ValueError("--ray reads a file (not standard input) and stops at a bad row (no --skip-bad)")
    from edgeprm.select.pipeline import score_stage

    n, _, dt = score_stage(Path(args.input), Path(args.output), ray_scoring(args), args.resume, not args.quiet)
    print(f"edgeprm: {n} rows scored on Ray Data with {args.ray_actors} actors; {dt:.1f} s, "
          f"{n / dt if dt > 0 else 0.0:.1f} rows/s -> {args.output}", file=sys.stderr)
    return 0


def run(args) -> int:
    import edgeprm

    if args.ray is not None:
        return run_ray(args)

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
    scorer = edgeprm.load(args.model, config=scorer_config(args))
    total = _count_lines(Path(args.input))
    stats = {"scored": 0, "resumed": len(kept), "bad": 0}
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    with part.open("w", encoding="utf-8") as fout:
        fout.writelines(kept)
        fout.flush()
        ferr = errors.open("a" if args.resume else "w", encoding="utf-8") if args.skip_bad else None
        chunk: list[tuple[dict, object]] = []  # (row, Prepared)

        def flush():
            results = scorer.score_prepared([p for _, p in chunk])
            for (row, _), r in zip(chunk, results):
                fout.write(json.dumps({**row, **r.to_dict(with_id=False)}, ensure_ascii=False) + "\n")
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
                        row = parse_line(text)
                        row_id = row.get("id")
                        if row_id is not None and str(row_id) in done_ids:
                            continue
                        if row_id is None and done_anon > 0:
                            done_anon -= 1
                            continue
                        prepared = scorer.prepare(row)
                    except ValueError as e:
                        if ferr is None:
                            flush()
                            print(f"edgeprm: bad row at line {line_no}: {e}\n{stats['scored'] + stats['resumed']} "
                                  f"scored rows are kept in {part}; fix the row (or pass --skip-bad) and rerun with "
                                  "--resume", file=sys.stderr)
                            return 1
                        ferr.write(json.dumps({"line": line_no, "error": str(e)}) + "\n")
                        ferr.flush()
                        stats["bad"] += 1
                        continue
                    chunk.append((row, prepared))
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


def add_arguments(p) -> None:
    p.description = ("Rows: {id?, problem, steps: [...]} or {id?, problem, solution}, optional response. Output rows "
                     "= input + step_rewards, trajectory_reward, score, truncated, num_tokens.")
    p.add_argument("input", help="input JSONL ('-' for standard input)")
    p.add_argument("-o", "--output", required=True, help="output JSONL (written atomically)")
    add_scorer_options(p)
    p.add_argument("--chunk-rows", type=int, default=128, help="rows read, scored and written at a time")
    p.add_argument("--resume", action="store_true", help="keep rows already written and score the rest")
    p.add_argument("--skip-bad", action="store_true", help="record bad rows in OUT.errors.jsonl and go on")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_ray_options(p)
