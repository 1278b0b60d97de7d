"""Converters from public data sets to edgeprm's row schema (see `edgeprm.rows`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

GSM8K_SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def gsm8k_rows(path: str | Path) -> Iterator[dict]:
    """GSM8K model solutions -> CLI rows, four per problem: {id, problem, steps, is_correct, group}.

    Steps are the solution's non-empty lines; ids are '<problem index>/<solver>', so the rows of one problem
    form a Best-of-4 group.
    """
    with Path(path).open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            rec = json.loads(line)
            for solver in GSM8K_SOLVERS:
                sol = rec[solver]
                steps = [s for s in sol["solution"].split("\n") if s.strip()]
                yield {"id": f"{i}/{solver}", "group": str(i), "problem": rec["question"], "steps": steps,
                       "is_correct": bool(sol["is_correct"])}
