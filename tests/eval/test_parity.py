"""Parity of score files: alignment reporting, Best-of-N figures, fidelity bars, the CLI."""


import pytest

from edgeprm.eval.parity import QUANT_BARS as BARS
from edgeprm.eval.parity import FidelityBar, compare

from .shared import rows


def test_identical_files_agree_perfectly():
    ref = rows([0.9, 0.2, 0.5, 0.4, 0.1, 0.3, 0.8, 0.7], correct=[1, 0, 0, 0, 0, 0, 1, 0])
    r = compare(ref, ref)
    assert r.complete and r.n_aligned == 8 and r.step_max_abs == 0 and r.score_max_abs == 0
    assert r.spearman == pytest.approx(1) and r.kendall == pytest.approx(1) and r.pairwise_agreement == 1
    assert r.top1_changes == () and r.max_changed_margin is None
    assert r.n_groups == 2 and r.top1_agreement == 1 and r.bon_accuracy == r.reference_bon_accuracy == 1


def test_perturbed_candidate_figures():
    ref = rows([0.9, 0.2, 0.5, 0.4, 0.1, 0.3, 0.8, 0.7], correct=[1, 0, 0, 0, 0, 0, 1, 0])
    cand = rows([0.9, 0.2, 0.5, 0.4, 0.1, 0.3, 0.7, 0.8], correct=[1, 0, 0, 0, 0, 0, 1, 0])  # group 1 flips
    r = compare(ref, cand)
    assert r.step_max_abs == pytest.approx(0.1) and r.step_mean_abs == pytest.approx(0.4 / 16)
    assert r.top1_agreement == 0.5 and r.reference_bon_accuracy == 1 and r.bon_accuracy == 0.5
    assert r.top1_changes == (("problem=p1", pytest.approx(0.1)),) and r.max_changed_margin == pytest.approx(0.1)
    assert r.n_pairs == 12 and r.pairwise_agreement == pytest.approx(11 / 12)
    assert BARS["int8"].failures(r) == ["step max |delta| 0.1 > 0.02", "Best-of-N top-1 agreement 0.5 < 0.99"]
    assert FidelityBar(min_spearman=0.5).failures(r) == []


def test_missing_extra_duplicate_and_misaligned_rows_are_reported():
    ref = rows([0.9, 0.2, 0.5, 0.4, 0.1, 0.3, 0.8, 0.7])
    cand = [dict(r) for r in ref]
    del cand[1]  # missing r1 (group p0)
    cand.append({"id": "zz", "problem": "p9", "step_rewards": [0.1], "score": 0.1})  # extra
    cand[5]["step_rewards"] = [0.8]  # r6: one step instead of two (group p1)
    cand.append(dict(cand[0]))  # duplicate r0
    r = compare(ref, cand)
    assert r.missing == ("r1",) and r.extra == ("zz",) and r.duplicates == ("r0",) and r.step_mismatch == ("r6",)
    assert not r.complete and r.n_aligned == 6 and r.n_groups == 0 and r.incomplete_groups == 2
    assert r.top1_agreement is None and r.spearman == pytest.approx(1)
    assert "1 missing, 1 extra, 1 duplicate ids and 1 rows with other step counts" in BARS["int4"].failures(r)[0]
    nulls = [dict(x) for x in ref]
    nulls[2]["step_rewards"] = [0.5, None]  # a truncated step on one side only
    assert compare(ref, nulls).step_mismatch == ("r2",)


def test_groups_by_group_field_else_problem_and_nan_scores_rank_last():
    ref = rows([0.1, 0.9, 0.5, 0.3], groups=["a", "a", "b", "b"])
    cand = rows([0.1, float("nan"), 0.5, 0.3], groups=["a", "a", "b", "b"])
    r = compare(ref, cand)
    assert r.n_groups == 2 and r.top1_agreement == 0.5  # NaN never wins, as in Scorer.best_of_n
    assert r.top1_changes == (("group=a", pytest.approx(0.8)),)
    assert compare(ref, ref, group_key="nope").n_groups == 1  # no such field: grouped by problem text
    anonymous = [{k: v for k, v in x.items() if k != "id"} for x in ref]
    assert compare(anonymous, anonymous).n_aligned == 4  # no ids: aligned by line
