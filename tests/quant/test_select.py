"""The kernel a scheme runs on this CPU: the fastest one measured here, remembered per machine; the static preference
when probing is off; an explicit kernel always wins."""

import json

import pytest
import torch

from edgeprm.hardware import cpu_info
from edgeprm.quant import select
from edgeprm.quant.config import QUANT_SCHEMES, QuantConfig


@pytest.fixture
def fresh_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRM_CACHE", str(tmp_path))
    monkeypatch.delenv(select.PROBE_ENV, raising=False)
    select.cpu_kernel.cache_clear()
    yield tmp_path / "kernel-choice.json"
    select.cpu_kernel.cache_clear()


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_the_fastest_measured_kernel_is_chosen_and_remembered(fresh_choice, monkeypatch, scheme):
    candidates = [k for k in QUANT_SCHEMES[scheme].cpu_kernels if select.available(k)]
    fastest = candidates[-1]  # not the first: the choice must come from the timings
    timed = []

    def fake_time(s, kernel, dtype, shape=select.PROBE_SHAPE):
        timed.append(kernel)
        return 0.001 if kernel == fastest else 0.01

    monkeypatch.setattr(select, "time_kernel", fake_time)
    assert select.cpu_kernel(scheme, torch.float32) == fastest
    assert sorted(timed) == sorted(candidates)
    record = json.loads(fresh_choice.read_text())
    (key, value), = record.items()
    assert key.startswith(f"{scheme}|{cpu_info().kind}") and value["kernel"] == fastest
    # Another process on this machine reads the choice instead of measuring again.
    select.cpu_kernel.cache_clear()
    timed.clear()
    assert select.cpu_kernel(scheme, torch.float32) == fastest and timed == []
    assert QuantConfig(scheme, kernel=candidates[0]).kernel_for("cpu") == candidates[0]  # asked for: no probe


def test_real_timings_rank_kernels_that_all_compute_the_layer(fresh_choice):
    times = {k: select.time_kernel("int8", k, torch.float32, shape=(32, 128, 256))
             for k in QUANT_SCHEMES["int8"].cpu_kernels if select.available(k)}
    assert all(t > 0 for t in times.values())
    assert select.cpu_kernel("int8") in times


def test_probing_off_takes_the_preference_for_this_kind_of_cpu(fresh_choice, monkeypatch):
    monkeypatch.setenv(select.PROBE_ENV, "0")
    monkeypatch.setattr(select, "time_kernel", lambda *a, **k: pytest.fail("must not measure"))
    cpu = cpu_info()
    assert select.cpu_kernel("int8") == ("onednn" if cpu.int8_dot in ("amx", "vnni") else "fbgemm")
    want4 = "bnb-nf4" if cpu.native_bf16 and select.available("bnb-nf4") else "nf4-dense"
    assert select.cpu_kernel("int4") == want4
    assert not fresh_choice.exists()
