"""`edgeprm bench` on a tiny checkpoint: every chosen config measured in its own process, fidelity vs fp32, a
recommendation within the bound, the JSON figures."""

import json

import pytest

from edgeprm.cli import main as cli_main
from edgeprm.perf.runner import BenchConfig, BenchResult, recommend


def test_bench_measures_each_config_and_recommends_within_the_bound(checkpoints, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    only = ["torch fp32", "torch int8 fbgemm", "onnx int8", "onnx int8 dynamic"]
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--model", str(checkpoints["value-head"]), "--tokens", "48", "--trajectories", "2",
                     "--repeats", "1", "--only", *only, "--work-dir", str(tmp_path / "work"),
                     "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "CPU:" in table and "recommended:" in table
    figures = json.loads(out.read_text())
    results = {r["config"]["label"]: r for r in figures["results"]}
    assert sorted(results) == sorted(only)
    for label, r in results.items():
        assert r["error"] is None, (label, r["error"])
        assert r["tokens_per_s"] > 0 and r["peak_rss"] > 0 and label in table
    assert results["torch fp32"]["mean_delta"] == 0.0 and results["torch fp32"]["kernel"] in ("mkl", "onednn")
    assert results["onnx int8"]["kernel"] == "nbits" and results["onnx int8 dynamic"]["kernel"] == "dynamic"
    assert all(0 < results[k]["mean_delta"] < 0.05 for k in only[1:])
    assert (tmp_path / "work" / "onnx-int8-nbits").is_dir() and (tmp_path / "work" / "onnx-int8-dynamic").is_dir()
    assert figures["recommended"] in results


def test_recommend_takes_the_fastest_config_within_the_bound_and_never_a_peer():
    def result(label, tps, delta, spearman, peer=False):
        return BenchResult(BenchConfig(label, "torch", peer=peer), tokens_per_s=tps, mean_delta=delta,
                           spearman=spearman)

    results = [result("a", 100, 0.0, 1.0), result("b", 300, 0.02, 0.99), result("c", 200, 0.005, 0.99),
               result("peer", 900, 0.0, 1.0, peer=True), result("d", 250, 0.001, 0.95)]
    assert recommend(results, 0.01, 0.98).config.label == "c"
    assert recommend(results[:1], 0.01, 0.98).config.label == "a"
