"""Converters of public data sets to rows (the GSM8K set skips cleanly when ../shared/data is absent)."""

import pytest

from edgeprm.datasets import GSM8K_SOLVERS, gsm8k_rows

from .conftest import GSM8K


@pytest.mark.skipif(not GSM8K.is_file(), reason=f"real data not present at {GSM8K}")
def test_gsm8k_rows_are_best_of_4_groups():
    rows = list(gsm8k_rows(GSM8K))
    assert len(rows) == 4 * 1319
    first = rows[:4]
    assert [r["id"] for r in first] == [f"0/{s}" for s in GSM8K_SOLVERS] and {r["group"] for r in first} == {"0"}
    assert all(r["steps"] and all(s.strip() for s in r["steps"]) for r in rows)
    share = sum(r["is_correct"] for r in rows) / len(rows)
    assert 0.3 < share < 0.45, share  # 38% of single solutions are correct (the set's README)
