"""Quantized scorers against fp32: the golden scores of a fixture, GSM8K and held-out Best-of-4 with the demo PRM."""

import math
import os
from pathlib import Path

import pytest

import edgeprm
from edgeprm.eval.parity import QUANT_BARS as BARS
from edgeprm.eval.parity import FidelityBar, compare
from edgeprm.quant.config import QuantConfig

from ..conftest import GSM8K
from ..golden import build_golden_model, golden_parity, golden_rows, reference_rows, score_rows
from .shared import PATHS

# Fidelity on the golden set (a random-weight fixture). Its candidates score within ~0.002 of each other (median
# top-1 margin 0.0017, scores span 0.35-0.45), below any 8-bit noise, so Best-of-N top-1 agreement there measures
# noise: these bars check |delta| and rank correlation; the top-1 bars (parity.BARS) are held on GSM8K with a
# trained PRM below. The fbgemm bar leaves room for CPUs whose int8 dot product saturates (7-bit activations:
# measured 0.022 / 0.964 here, 0.015 / 0.990 with 8 bits).
GOLDEN_BARS = {"fbgemm": FidelityBar(max_step_delta=0.03, min_spearman=0.95),
               "bnb-int8": FidelityBar(max_step_delta=0.02, min_spearman=0.98),
               "bnb-nf4": FidelityBar(max_step_delta=0.06, min_spearman=0.98)}


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory):
    return build_golden_model(tmp_path_factory.mktemp("golden") / "m")


def test_golden_fixture_rebuilds_byte_identical(golden_model, tmp_path):
    again = build_golden_model(tmp_path / "again")  # also checks the sha256s in meta.json
    for f in ("model.safetensors", "tokenizer.json"):
        assert (again / f).read_bytes() == (golden_model / f).read_bytes()


def test_fp32_scorer_matches_the_golden_scores(golden_model):
    rows = score_rows(edgeprm.load(golden_model, device="cpu", dtype="float32"), golden_rows())
    ref = reference_rows()
    assert [r["id"] for r in rows] == [r["id"] for r in ref]
    worst = max(abs(a - b) for x, y in zip(rows, ref) for a, b in zip(x["step_rewards"] + [x["score"]],
                                                                       y["step_rewards"] + [y["score"]]))
    assert worst <= 1e-5, worst
    r = compare(ref, rows)
    assert r.complete and r.top1_agreement == 1.0 and r.reference_bon_accuracy == r.bon_accuracy


@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_hold_the_golden_bars(golden_model, scheme, kernel):
    report = golden_parity(edgeprm.load(golden_model, quantization=QuantConfig(scheme, kernel), device="cpu"), kernel)
    assert report.complete and report.n_aligned == 200
    assert not GOLDEN_BARS[kernel].failures(report), GOLDEN_BARS[kernel].failures(report)


def trained_model() -> Path | None:
    env = os.environ.get("EDGEPRM_FIDELITY_MODEL")
    if env:
        return Path(env)
    demo = Path(edgeprm.__file__).parent / "assets" / "demo-prm"
    return demo if (demo / "config.json").is_file() else None


@pytest.fixture(scope="module")
def gsm8k_reference():
    model = trained_model()
    if model is None:
        pytest.skip("no trained PRM (edgeprm/assets/demo-prm or EDGEPRM_FIDELITY_MODEL): the Best-of-N bars need "
                    "one, since a random model's candidates tie within quantization noise")
    if not GSM8K.is_file():
        pytest.skip(f"{GSM8K} is absent (it lives in ../shared/data beside the repository)")
    from edgeprm.datasets import gsm8k_rows

    rows = [r for r in gsm8k_rows(GSM8K) if int(r["group"]) < 100]  # 100 problems x 4 solutions
    return model, rows, score_rows(edgeprm.load(model, device="cpu", dtype="float32", truncate=True), rows)


BARS_MISSED = pytest.mark.xfail(strict=True, reason=(
    "issue 6, blocked: on the 2M-parameter demo PRM, the only trained PRM here, bf16 rounding alone moves a step "
    "reward by up to 0.69 and changes 1.4% of Best-of-4 picks, so the int8 bars (max |delta| <= 0.02, top-1 >= 0.99) "
    "and int4 top-1 >= 0.95 are missed by every path (bench/QUANT.md has the figures); rankings and Best-of-N "
    "accuracy hold (see the test below). strict: a pass here must be recorded."))


@BARS_MISSED
@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_hold_the_bars_on_gsm8k(gsm8k_reference, scheme, kernel):
    model, rows, ref = gsm8k_reference
    scorer = edgeprm.load(model, quantization=QuantConfig(scheme, kernel), device="cpu", truncate=True)
    report = compare(ref, score_rows(scorer, rows), kernel)
    assert report.complete and report.n_groups == 100
    assert not BARS[scheme].failures(report), BARS[scheme].failures(report)
    assert not math.isnan(report.spearman)


@pytest.fixture(scope="module")
def heldout_reference():
    """The demo PRM's own held-out synthetic problems (a data seed never trained on), 100 problems x 4."""
    model = trained_model()
    if model is None:
        pytest.skip("no trained PRM (edgeprm/assets/demo-prm or EDGEPRM_FIDELITY_MODEL)")
    from edgeprm.demo.evaluate import HELDOUT_SEED
    from edgeprm.demo.synthetic import generate

    rows = [{**r, "group": r["problem_id"]} for r in generate(100, seed=HELDOUT_SEED)]
    return model, rows, score_rows(edgeprm.load(model, device="cpu", dtype="float32"), rows)


@BARS_MISSED
@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_hold_the_bars_on_the_demo_heldout_set(heldout_reference, scheme, kernel):
    model, rows, ref = heldout_reference
    scorer = edgeprm.load(model, quantization=QuantConfig(scheme, kernel), device="cpu")
    report = compare(ref, score_rows(scorer, rows), kernel)
    assert report.complete and report.n_groups == 100
    assert not BARS[scheme].failures(report), BARS[scheme].failures(report)


@pytest.mark.parametrize("data", ["gsm8k", "heldout"])
@pytest.mark.parametrize(("scheme", "kernel"), PATHS)
def test_quantized_scorers_keep_the_ranking_and_best_of_n_accuracy(request, data, scheme, kernel):
    """What does hold on the demo PRM: rankings (Spearman >= 0.95 over all trajectories), Best-of-N accuracy within 4
    of 100 problems of fp32's, and a small mean step change (int8 <= 0.005, int4 <= 0.015). Its step maximum does not
    hold any bound worth asserting: bf16 rounding alone swings one borderline held-out step by 0.69. A broken path
    (wrong scales, a transposed weight) drops Spearman below 0.5 and Best-of-N accuracy to a random pick's."""
    model, rows, ref = request.getfixturevalue(f"{data}_reference")
    scorer = edgeprm.load(model, quantization=QuantConfig(scheme, kernel), device="cpu", truncate=True)
    report = compare(ref, score_rows(scorer, rows), kernel)
    assert report.complete and report.n_groups == 100
    assert report.spearman >= 0.95, report.spearman
    assert abs(report.bon_accuracy - report.reference_bon_accuracy) <= 0.04, report
    assert report.step_mean_abs <= (0.005 if scheme == "int8" else 0.015), report.step_mean_abs
