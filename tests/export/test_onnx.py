"""ONNX export against the torch scorer, on tiny checkpoints of each family.

fp32 bundles must reproduce torch fp32 (<= 1e-4 on every reward); int8/int4 bundles are judged by fidelity to fp32
(rank agreement, reward error, Best-of-N top-1) with floors a random tiny model meets honestly."""

import json
import shutil

import pytest

import edgeprm

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from edgeprm.backends.onnx import BUNDLE_FILE, OnnxScorer, load_onnx  # noqa: E402
from edgeprm.eval.parity import compare  # noqa: E402
from edgeprm.export.onnx import ExportConfig, export, head_matmul_nodes  # noqa: E402

from ..helpers import close, items  # noqa: E402

FAMILIES = ["step-classifier", "value-head", "token-prob"]


SCHEMES = ["none", "int8", "int4"]


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_matches_torch_batched_alone_and_padded_left(scorers, bundle, family):
    trajs = items(0, 3)  # a 1-step, a 12-step and a random trajectory of different lengths
    want = scorers[family].score_batch(trajs)
    onnx = edgeprm.load(bundle(family), backend="onnx")
    assert isinstance(onnx, OnnxScorer) and onnx.quantization is None and onnx.family.value == family
    assert onnx.providers == ["CPUExecutionProvider"]
    close(onnx.score_batch(trajs), want, 1e-4)  # batch 3
    close([onnx.score_batch([t])[0] for t in trajs], want, 1e-4)  # batch 1 each
    left = load_onnx(bundle(family), padding_side="left", threads=1)
    close(left.score_batch(trajs), want, 1e-4)


def test_aggregation_alpha_truncation_and_best_of_n_match_torch(checkpoints, bundle):
    ckpt, path = checkpoints["value-head"], bundle("value-head")
    trajs = items(1, 6)
    for aggregation, alpha in [("mean", 1.0), ("prod", 1.0), ("reasonflux", 1.5)]:
        want = edgeprm.load(ckpt, device="cpu", aggregation=aggregation, alpha=alpha).score_batch(trajs)
        close(edgeprm.load(path, backend="onnx", aggregation=aggregation, alpha=alpha).score_batch(trajs), want, 1e-4)
    # Truncation: cut steps are None, no trajectory reward, the score uses the value after the last kept step.
    want = edgeprm.load(ckpt, device="cpu", max_length=40, truncate=True).score_batch(trajs)
    got = edgeprm.load(path, backend="onnx", max_length=40, truncate=True).score_batch(trajs)
    assert any(r.truncated for r in got)
    close(got, want, 1e-4)
    onnx, torch_scorer = edgeprm.load(path, backend="onnx"), edgeprm.load(ckpt, device="cpu")
    cands = [list(t.steps) for t in trajs]
    best, results = onnx.best_of_n("What is 2 + 3?", cands)
    want_best, want_results = torch_scorer.best_of_n("What is 2 + 3?", cands)
    assert best == want_best
    close(results, want_results, 1e-4)


# Floors a random tiny model meets honestly: a 40-wide 2-layer model has few weights per block, so int4 error is
# relatively large; real models average it over thousands of columns. Measured here (40 trajectories, 10 problems
# of 4): Spearman >= 0.95, max |delta| <= 0.04, top-1 >= 0.8 in every family and scheme.
FLOORS = {"int8": {"spearman": 0.9, "step_max_abs": 0.06, "top1_agreement": 0.7},
          "int4": {"spearman": 0.9, "step_max_abs": 0.08, "top1_agreement": 0.7}}


def rows(results, groups: int) -> list[dict]:
    """ScoreResults as `edgeprm score` rows, trajectory i in Best-of-N group i % groups."""
    return [{**r.to_dict(), "group": int(r.id) % groups} for r in results]


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_bundles_keep_rankings(scorers, bundle, family, scheme):
    trajs = items(2, 40, problems=10)
    reference = scorers[family].score_batch(trajs)
    quantized = edgeprm.load(bundle(family, scheme), backend="onnx", quantization=scheme)
    assert quantized.quantization == scheme
    report = compare(rows(reference, 10), rows(quantized.score_batch(trajs), 10), scheme)
    print(f"{family} {scheme}: Spearman {report.spearman:.4f}, step max |delta| {report.step_max_abs:.4f}, "
          f"mean {report.step_mean_abs:.4f}, top-1 {report.top1_agreement:.2f} of {report.n_groups} groups")
    assert report.complete and report.n_groups == 10
    for metric, floor in FLOORS[scheme].items():
        value = getattr(report, metric)
        assert (value <= floor) if metric == "step_max_abs" else (value >= floor), (metric, value, report)


@pytest.mark.parametrize("scheme,bits", [("int8", 8), ("int4", 4)])
def test_quantized_graphs_quantize_the_backbone_but_not_the_reward_head(bundle, scheme, bits):
    import onnx

    path = bundle("step-classifier", scheme)
    meta = json.loads((path / BUNDLE_FILE).read_text())
    model = onnx.load(str(path / meta["graph"]))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    assert {onnx.helper.get_attribute_value(a) for n in nbits for a in n.attribute if a.name == "bits"} == {bits}
    assert meta["quantization"]["bits"] == bits
    head = head_matmul_nodes(model)
    assert len(head) == 2 and meta["quantization"]["excluded_nodes"] == head
    assert all(n.op_type == "MatMul" for n in model.graph.node if n.name in head)
    assert meta["graph"] == {"int8": "prm.int8.onnx", "int4": "prm.int4.b32.onnx"}[scheme]


def test_int8_dynamic_method_uses_matmul_integer_and_records_it(bundle, tmp_path):
    import onnx

    out = export(bundle("step-classifier"), tmp_path / "dyn", ExportConfig("int8", int8_method="dynamic"))
    meta = json.loads((out / BUNDLE_FILE).read_text())
    ops = [n.op_type for n in onnx.load(str(out / meta["graph"])).graph.node]
    assert ops.count("MatMulInteger") == 14 and "MatMulNBits" not in ops
    assert meta["quantization"]["method"] == "onnxruntime.quantization.quantize_dynamic"
    with pytest.raises(ValueError, match="int8_method must be one of"):
        ExportConfig("int8", int8_method="static")


def test_bundle_is_self_contained_and_records_its_spec(bundle, tmp_path):
    src = bundle("token-prob")
    moved = tmp_path / "moved"
    shutil.copytree(src, moved)
    meta = json.loads((moved / BUNDLE_FILE).read_text())
    assert meta["family"] == "token-prob" and meta["format_version"] == 1 and meta["graph"] == "prm.fp32.onnx"
    assert meta["encoding"]["token_prob"] == {"step_tag": " ки", "good_token": "+", "bad_token": "-"}
    assert {"edgeprm", "torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert sorted(p.name for p in moved.iterdir()) == sorted([*meta["files"], BUNDLE_FILE])
    r = edgeprm.load(moved, backend="onnx").score("What is 2 + 3?", ["2 + 3 = 5.", "The answer is 5."])
    assert len(r.step_rewards) == 2 and r.trajectory_reward == pytest.approx(r.step_rewards[-1], abs=1e-6)


def test_export_checks_its_options_and_out_dir(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="block_size must be a power of two >= 16"):
        ExportConfig("int4", block_size=24)
    with pytest.raises(ValueError, match=r"accuracy_level must be one of \(0, 1, 2, 3, 4\)"):
        ExportConfig("int4", accuracy_level=7)
    with pytest.raises(ValueError, match="quantization must be one of"):
        ExportConfig("fp8")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no edgeprm bundle"):
        export(checkpoints["value-head"], busy)
    assert (busy / "notes.txt").read_text() == "mine"
