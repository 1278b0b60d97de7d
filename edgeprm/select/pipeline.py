"""`select_file`: score a file of trajectories (unless it is already scored) and keep the rows a `SelectRule` picks.

Two stages, each streaming:

1. **Scoring** (only when the input rows lack the rewards the rule reads): rows are scored a chunk at a time and
   appended, in input order, to a scored file (`--scored-output PATH`, or `OUT.scored.jsonl` removed at the end),
   written through `PATH.part` and flushed after every chunk. A killed run loses at most one chunk: `resume=True`
   keeps the complete rows already in the part file and scores the input from the next row on (rows are written in
   input order, so the count of rows written is where to restart). A bad row stops the run naming its line; the
   rows before it are kept for the resume. This stage is the only costly one; `LocalScoring` runs it in this
   process, `edgeprm.distributed.files.RayScoring` on a Ray cluster.
2. **Selection** over the scored rows (one pass, two for top-fraction; see `edgeprm.select.policy`), written to
   OUT through `OUT.part` and renamed when done. It reads no model and takes seconds, so a resumed run simply
   redoes it from the start.

Memory: one chunk of rows while scoring; while selecting, nothing for a threshold, k rows per open group for
top-k, 8 bytes per row for top-fraction.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprm.select.io import RowWriter, count_rows, iter_rows, present
from edgeprm.select.policy import Cutoff, SelectRule, TopFraction, TopK, needs_fields


class LocalScoring:
    """Scores rows in this process with one loaded scorer (`edgeprm.load`), `chunk_rows` at a time."""

    def __init__(self, scorer, chunk_rows: int = 128):
        if chunk_rows < 1:
            raise ValueError(f"--chunk-rows must be >= 1; got {chunk_rows}")
        self.scorer, self.chunk_rows = scorer, chunk_rows

    def scored_chunks(self, path: Path, skip: int = 0) -> Iterator[list[dict]]:
        """Lists of output rows (input row + `ScoreResult.to_dict` fields), in input order, from row `skip` on.

        A bad row raises ValueError naming the file and line, after the rows before it have been yielded."""
        chunk: list[tuple[dict, object]] = []

        def score() -> list[dict]:
            results = self.scorer.score_prepared([p for _, p in chunk])
            out = [{**row, **r.to_dict(with_id=False)} for (row, _), r in zip(chunk, results)]
            chunk.clear()
            return out

        for i, (where, row) in enumerate(iter_rows(path)):
            if i < skip:
                continue
            try:
                chunk.append((row, self.scorer.prepare(present(row))))
            except ValueError as e:
                if chunk:
                    yield score()
                raise ValueError(f"{path} {where}: {e}") from None
            if len(chunk) >= self.chunk_rows:
                yield score()
        if chunk:
            yield score()


@dataclass(frozen=True)
class SelectSummary:
    """What a `select_file` run did and kept (also written as JSON beside the output)."""

    input: str
    output: str
    mode: str
    rule: dict
    rows: int
    kept: int
    already_scored: bool
    scored: int = 0
    resumed: int = 0
    groups: int | None = None
    cutoff: float | None = None
    max_rows_held: int = 0
    kept_scores: dict = field(default_factory=dict)
    all_scores: dict = field(default_factory=dict)
    scoring_seconds: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """The summary as the CLI prints it."""
        r = self.rule
        if self.mode == "top-k":
            how = f"top-{r['top_k']} per {r['group_key']} over {self.groups} groups"
        elif self.mode == "top-fraction":
            how = f"the best {r['top_fraction']:g} of all rows"
        else:
            how = f"{r['score_field']} >= {r['threshold']:g}"
        pct = 100.0 * self.kept / self.rows if self.rows else 0.0
        lines = [f"kept {self.kept} of {self.rows} rows ({pct:.1f} %): {how}, by '{r['score_field']}'"]
        if self.already_scored:
            lines.append("the input was already scored (no model loaded)")
        else:
            rate = self.scored / self.scoring_seconds if self.scoring_seconds > 0 else 0.0
            lines.append(f"scored {self.scored} rows in {self.scoring_seconds:.1f} s ({rate:.1f} rows/s), "
                         f"{self.resumed} kept from an earlier run")
        if self.cutoff is not None:
            lines.append(f"cut-off score {self.cutoff:.6g}")
        for name, s in (("kept", self.kept_scores), ("all", self.all_scores)):
            if s.get("n"):
                lines.append(f"{name} rows' {r['score_field']}: mean {s['mean']:.4g}, min {s['min']:.4g}, "
                             f"max {s['max']:.4g} ({s['nan']} without a score)")
        lines.append(f"at most {self.max_rows_held} rows held in memory while selecting; {self.seconds:.1f} s "
                     f"in all -> {self.output}")
        return "\n".join(lines)


class _Stats:
    """Mean / min / max of a stream of scores, NaN counted apart."""

    def __init__(self):
        self.n, self.nan, self.total, self.min, self.max = 0, 0, 0.0, math.inf, -math.inf

    def add(self, s: float) -> None:
        if math.isnan(s):
            self.nan += 1
            return
        self.n += 1
        self.total += s
        self.min, self.max = min(self.min, s), max(self.max, s)

    def to_dict(self) -> dict:
        if not self.n:
            return {"n": 0, "nan": self.nan}
        return {"n": self.n, "nan": self.nan, "mean": self.total / self.n, "min": self.min, "max": self.max}


def is_scored(path: Path, rule: SelectRule) -> bool:
    """Whether the file's first row already has the rewards the rule reads (an empty file counts as scored)."""
    for _, row in iter_rows(path, chunk_rows=1):
        return all(f in row for f in needs_fields(rule.score_field))
    return True


def scored_path(output: Path, scored_output: str | Path | None) -> Path:
    return Path(scored_output) if scored_output is not None else output.with_name(output.name + ".scored.jsonl")


def score_stage(input: Path, scored: Path, scoring, resume: bool, progress: bool = False) -> tuple[int, int, float]:
    """Stage 1: score `input` into `scored` (see the module docstring). Returns (scored, resumed, seconds)."""
    part = scored.with_name(scored.name + ".part")
    if resume and scored.is_file() and not part.exists():
        return 0, count_rows(scored), 0.0  # stage 1 finished before the kill
    if part.exists() and not resume:
        raise ValueError(f"{part} holds an unfinished run; pass --resume to continue it, or delete it")
    t0 = time.perf_counter()
    writer = RowWriter(scored, append=resume)
    done = writer.count
    from tqdm.auto import tqdm

    try:
        with tqdm(total=count_rows(input), initial=done, unit="row", desc="scoring", disable=not progress) as bar:
            try:
                for chunk in scoring.scored_chunks(input, skip=done):
                    for row in chunk:
                        writer.write(row)
                    writer.flush()
                    bar.update(len(chunk))
            except ValueError as e:
                writer.flush()
                raise ValueError(f"{e}\n{writer.count} scored rows are kept in {writer.part}; fix the row and "
                                 "rerun with --resume") from None
        writer.commit()
    finally:
        writer.close()
    return writer.count - done, done, time.perf_counter() - t0


def select_stage(source: Path, output: Path, rule: SelectRule, progress: bool = False) -> dict:
    """Stage 2: keep the rows `rule` picks from the scored `source`, into `output` (atomic). Returns the counts."""
    from tqdm.auto import tqdm

    total = count_rows(source)
    kept_stats, all_stats = _Stats(), _Stats()
    selector = rule.selector()
    out = {"rows": 0, "kept": 0, "groups": None, "cutoff": None, "max_rows_held": 0}
    if isinstance(selector, TopFraction):  # first pass: one float per row, then the exact cut-off
        for where, row in tqdm(iter_rows(source), total=total, unit="row", desc="ranking", disable=not progress):
            selector.add(rule.score(row, where))
        cut = selector.cutoff()
        out["cutoff"] = None if cut is None else cut[0]
        selector = Cutoff(cut)
    writer = RowWriter(output)
    try:
        def keep(rows):
            for _, r in rows:
                writer.write(r)
                kept_stats.add(rule.score(r))

        for index, (where, row) in enumerate(tqdm(iter_rows(source), total=total, unit="row", desc="selecting",
                                                  disable=not progress)):
            s = rule.score(row, where)
            all_stats.add(s)
            keep(selector.offer(index, row, s, where))
            out["max_rows_held"] = max(out["max_rows_held"], selector.held)
            out["rows"] += 1
        keep(selector.finish())
        writer.commit()
    finally:
        writer.close()
    if isinstance(selector, TopK):
        out["groups"] = selector.groups
    out["kept"] = writer.count
    out["kept_scores"], out["all_scores"] = kept_stats.to_dict(), all_stats.to_dict()
    return out


def select_file(input: str | Path, output: str | Path, rule: SelectRule, scoring=None, *, resume: bool = False,
                rescore: bool = False, scored_output: str | Path | None = None,
                progress: bool = False) -> SelectSummary:
    """Score `input` if needed and write the rows `rule` keeps to `output` (JSONL or Parquet by name).

    scoring: a `LocalScoring` or `edgeprm.distributed.files.RayScoring`, or a callable returning one (called only
    when the input needs scoring, so an already scored file loads no model). `rescore` scores even a scored input.
    Writes `output` + '.summary.json' and returns the summary.
    """
    input, output = Path(input), Path(output)
    if not input.is_file():
        raise FileNotFoundError(f"no such file: {input}")
    t0 = time.perf_counter()
    already = not rescore and is_scored(input, rule)
    scored_n, resumed, scoring_s = 0, 0, 0.0
    source = input
    if not already:
        if scoring is None:
            raise ValueError(f"{input} is not scored (its rows lack {', '.join(needs_fields(rule.score_field))}) "
                             "and no scorer was given")
        scoring = scoring if hasattr(scoring, "scored_chunks") else scoring()
        source = scored_path(output, scored_output)
        scored_n, resumed, scoring_s = score_stage(input, source, scoring, resume, progress)
    counts = select_stage(source, output, rule, progress)
    if not already and scored_output is None:
        source.unlink()
    summary = SelectSummary(input=str(input), output=str(output), mode=rule.mode, rule=asdict(rule),
                            already_scored=already, scored=scored_n, resumed=resumed, scoring_seconds=scoring_s,
                            seconds=time.perf_counter() - t0, **counts)
    tmp = output.with_name(output.name + ".summary.json.part")
    tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    os.replace(tmp, output.with_name(output.name + ".summary.json"))
    return summary
