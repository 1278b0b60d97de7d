"""Regenerate the golden files: `python tests/golden/make_golden.py`.

- `arith200.input.jsonl`: 200 synthetic Best-of-4 rows (50 problems x 4 candidates; a wrong candidate carries one
  arithmetic slip and everything after it follows from the slip), with `group` and `is_correct`, seeded.
- `step_classifier_seed0.fp32.jsonl`: those rows scored in fp32 by `edgeprm.testing.build_step_classifier(seed=0)`
  (the output rows of `edgeprm score`).
- `meta.json`: sha256 of the fixture's files, so a changed fixture builder is caught before the scores are blamed.

Only rerun this when the fixture or the scoring recipe changes on purpose, and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUT = HERE / "arith200.input.jsonl"
REFERENCE = HERE / "step_classifier_seed0.fp32.jsonl"
META = HERE / "meta.json"
FIXTURE_SEED = 0
FIXTURE_FILES = ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json")

_NAMES = ("Janet", "Tom", "Ana", "Omar", "Li", "Sara")
_THINGS = ("eggs", "apples", "muffins", "boxes", "oranges", "ducks")


def make_rows(n_problems: int = 50, n_candidates: int = 4, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for p in range(n_problems):
        who, what = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b, c, d = rng.randint(2, 40), rng.randint(2, 12), rng.randint(1, 30), rng.randint(2, 9)
        problem = (f"{who} has {a} {what}. {who} buys {b} bags with {d} {what} each, then gives away {c}. "
                   f"How many {what} does {who} have left?")
        for k in range(n_candidates):
            slip = rng.random() < 0.5
            where = rng.randint(0, 2) if slip else -1
            bought = b * d + (rng.choice((-10, -1, 1, 10)) if where == 0 else 0)
            total = a + bought + (rng.choice((-2, 2, 7)) if where == 1 else 0)
            left = total - c + (rng.choice((-3, 1, 5)) if where == 2 else 0)
            steps = [f"{who} buys {b} * {d} = {bought} {what}.",
                     f"Then {who} has {a} + {bought} = {total} {what}.",
                     f"After giving away {c}, {who} has {total} - {c} = {left} {what}.",
                     f"The answer is \\boxed{{{left}}}."]
            if rng.random() < 0.3:
                steps = steps[:1] + [f"Step check: so far {bought} {what} were bought."] + steps[1:]
            rows.append({"id": f"{p}/{k}", "group": str(p), "problem": problem, "steps": steps,
                         "is_correct": left == a + b * d - c})
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    import edgeprm
    from edgeprm.quant.checkpoint import package_versions
    from edgeprm.rows import write_jsonl
    from edgeprm.testing import build_step_classifier

    rows = make_rows()
    write_jsonl(rows, INPUT)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_step_classifier(Path(tmp) / "m", seed=FIXTURE_SEED)
        scorer = edgeprm.load(model, device="cpu", dtype="float32")
        results = scorer.score_batch(rows)
        out = [{**r, "step_rewards": s.step_rewards, "trajectory_reward": s.trajectory_reward, "score": s.score}
               for r, s in zip(rows, results)]
        write_jsonl(out, REFERENCE)
        meta = {"fixture": f"edgeprm.testing.build_step_classifier(seed={FIXTURE_SEED})",
                "input": INPUT.name, "reference": REFERENCE.name, "dtype": "float32",
                "sha256": {f: sha256(model / f) for f in FIXTURE_FILES},
                "versions": {k: v for k, v in package_versions().items() if k != "bitsandbytes"}}
    META.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {INPUT.name} ({len(rows)} rows), {REFERENCE.name}, {META.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
