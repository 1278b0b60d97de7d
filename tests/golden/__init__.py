"""Golden fp32 scores of a fixture model, and helpers any backend's tests use to hold a scorer against them.

    from tests.golden import build_golden_model, golden_parity
    report = golden_parity(scorer)              # a ParityReport of scorer vs the committed fp32 scores
    assert not BARS["int8"].failures(report)    # edgeprm.eval.parity.QUANT_BARS, or a FidelityBar of your own

The model is `edgeprm.testing.build_step_classifier(seed=0)` (rebuilt, never committed: `meta.json` holds the
sha256 of its files); the input is the committed `arith200.input.jsonl`. Regenerate with
`python tests/golden/make_golden.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .make_golden import FIXTURE_FILES, FIXTURE_SEED, INPUT, META, REFERENCE, sha256


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def golden_rows() -> list[dict]:
    """The input rows (id, group, problem, steps, is_correct)."""
    return read_jsonl(INPUT)


def reference_rows() -> list[dict]:
    """The committed fp32 score rows."""
    return read_jsonl(REFERENCE)


def build_golden_model(path: Path) -> Path:
    """Rebuild the fixture model into `path` and check its files against meta.json."""
    from edgeprm.testing import build_step_classifier

    out = build_step_classifier(path, seed=FIXTURE_SEED)
    want = json.loads(META.read_text())["sha256"]
    got = {f: sha256(out / f) for f in FIXTURE_FILES}
    bad = [f for f in FIXTURE_FILES if got[f] != want[f]]
    if bad:
        raise AssertionError(f"the rebuilt golden fixture differs from the one the golden scores came from in {bad}: "
                             "the fixture builder (or torch/tokenizers) changed; if on purpose, run "
                             "`python tests/golden/make_golden.py` and commit the new files")
    return out


def score_rows(scorer, rows: list[dict]) -> list[dict]:
    """Score rows as `edgeprm score` writes them (input row + step_rewards, trajectory_reward, score)."""
    results = scorer.score_batch(rows)
    return [{**r, "step_rewards": s.step_rewards, "trajectory_reward": s.trajectory_reward, "score": s.score}
            for r, s in zip(rows, results)]


def golden_parity(scorer, name: str = "candidate"):
    """A ParityReport of `scorer`'s scores on the golden input against the committed fp32 scores."""
    from edgeprm.eval.parity import compare

    return compare(reference_rows(), score_rows(scorer, golden_rows()), name)
