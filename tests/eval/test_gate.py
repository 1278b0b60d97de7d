"""The fidelity gate: what a --compare argument names, where predictions go, drops against the limit."""

from pathlib import Path

import pytest

from edgeprm.config import ScorerConfig
from edgeprm.eval.gate import (
    GateReport,
    Variant,
    VariantRun,
    format_gate,
    parse_variant,
    parse_variants,
    predictions_path,
    reference_variant,
)
from edgeprm.eval.processbench import ProcessBenchReport, SplitResult


def test_variants_a_compare_argument_names(tmp_path):
    ref = reference_variant("some/model", ScorerConfig(truncate=True))
    assert ref.label == "model" and ref.describe() == "some/model (truncate=True)"
    int8 = parse_variant("int8", ref)
    assert (int8.label, int8.model, int8.config.quantization, int8.config.truncate) == ("int8", "some/model", "int8",
                                                                                        True)
    assert int8.describe() == "some/model (quantization=int8, truncate=True)"
    assert parse_variant("bf16", ref).config.dtype == "bfloat16" and parse_variant("float16", ref).config.dtype == \
        "float16"
    bundle = tmp_path / "prm-int8"
    bundle.mkdir()
    (bundle / "edgeprm.json").write_text("{}")
    onnx = parse_variant(str(bundle), parse_variant("int4", ref))
    assert (onnx.label, onnx.config.backend, onnx.config.quantization) == ("prm-int8", "onnx", None)
    other = parse_variant(str(tmp_path), int8)
    assert (other.config.backend, other.config.quantization, other.model) == ("torch", None, str(tmp_path))
    assert parse_variant("owner/name", ref).model == "owner/name"  # a hub id
    with pytest.raises(ValueError, match="'nope' is not a quantization \\(int8, int4\\), a dtype"):
        parse_variant("nope", ref)
    with pytest.raises(ValueError, match="the reference is an ONNX bundle, which is not re-quantized"):
        parse_variant("int8", onnx)
    twice = parse_variants([str(bundle), str(bundle)], ref)
    assert [v.label for v in twice] == ["prm-int8#1", "prm-int8#2"]


def test_predictions_of_variants_go_beside_the_reference():
    v = Variant("prm int8/x", None, ScorerConfig())
    assert predictions_path(Path("out/p.jsonl"), v, True) == Path("out/p.jsonl")
    assert predictions_path(Path("out/p.jsonl"), v, False) == Path("out/p.prm_int8_x.jsonl")
    assert predictions_path(None, v, False) is None


def run(label, f1s):
    splits = tuple(SplitResult(s, 10, 5, 5, f, f, f) for s, f in zip(("gsm8k", "math"), f1s))
    avg = None if None in f1s else sum(f1s) / 2
    from edgeprm.eval.calibration import Calibration

    cal = Calibration("all", 0, 0, None, None, ())
    report = ProcessBenchReport(label, 0.5, splits, avg, (), (cal, cal, cal))
    return VariantRun(label, label, report, 1.0, 2.0, 20)


def test_the_gate_fails_a_variant_that_loses_more_than_the_limit():
    ref = run("ref", [60.0, 50.0])
    variants = (run("int8", [59.5, 50.2]), run("int4", [57.0, 50.0]), run("broken", [None, 50.0]))
    g = GateReport("processbench", ref, variants, max_drop=1.0)
    assert g.failures() == ["int4: gsm8k F1 57.00 vs 60.00, a drop of 3.00 > 1 points",
                            "int4: average F1 (2 splits) 53.50 vs 55.00, a drop of 1.50 > 1 points",
                            "broken: gsm8k F1 could not be computed (reference 60.00)",
                            "broken: average F1 (2 splits) could not be computed (reference 55.00)"]
    assert GateReport("processbench", ref, variants[:1], max_drop=0.0).failures() == [
        "int8: gsm8k F1 59.50 vs 60.00, a drop of 0.50 > 0 points",  # a gain (math) never fails
        "int8: average F1 (2 splits) 54.85 vs 55.00, a drop of 0.15 > 0 points"]
    assert GateReport("processbench", ref, variants).failures() == []  # no limit given
    changes = {(v, name): (a, b) for v, name, a, b, gated in g.changes() if gated}
    assert changes["int8", "math F1"] == (50.0, 50.2)


def test_the_gate_table_shows_each_change():
    from edgeprm.eval.parity import compare

    rows = [{"id": "a", "problem": "p", "step_rewards": [0.5], "score": 0.5}]
    ref = run("ref", [60.0, 50.0])
    v = run("int4", [57.0, 50.0])
    v = VariantRun(v.label, v.scorer, v.report, 1.0, 4.0, 20, 0, compare(rows, rows),
                   (("first-error agreement", 95.0),))
    text = format_gate(GateReport("processbench", ref, (v,), max_drop=1.0))
    assert "gsm8k F1 *" in text and "57.00 (-3.00)" in text and "50.00 (+0.00)" in text
    assert "first-error agreement (%)" in text and "95.00" in text and "1.0 / 4.0" in text and "5.0" in text
    assert "FAIL int4: gsm8k F1 57.00 vs 60.00" in text
