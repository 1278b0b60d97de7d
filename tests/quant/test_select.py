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
    candidates = [k for k in QUANT_SCHEMES[scheme].cpu_kernels if select.available(k)
                  and k not in select.ASKED_FOR_ONLY]
    fastest = candidates[-1]  # not the first: the choice must come from the timings
    timed = []

    def fake_time(s, kernels, dtype, shape=select.PROBE_SHAPE):
        timed.extend(kernels)
        return {k: 0.001 if k == fastest else 0.01 for k in kernels}

    monkeypatch.setattr(select, "time_kernels", fake_time)
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
    times = select.time_kernels("int8", [k for k in QUANT_SCHEMES["int8"].cpu_kernels if select.available(k)],
                                torch.float32, shape=(32, 128, 256))
    assert all(t > 0 for t in times.values())
    assert select.cpu_kernel("int8") in times


def test_probing_off_takes_the_preference_for_this_kind_of_cpu(fresh_choice, monkeypatch):
    monkeypatch.setenv(select.PROBE_ENV, "0")
    monkeypatch.setattr(select, "time_kernels", lambda *a, **k: pytest.fail("must not measure"))
    cpu = cpu_info()
    assert select.cpu_kernel("int8") == ("onednn" if cpu.int8_dot in ("amx", "vnni") else "fbgemm")
    want4 = "bnb-nf4" if cpu.native_bf16 and select.available("bnb-nf4") else "nf4-dense"
    assert select.cpu_kernel("int4") == want4
    assert not fresh_choice.exists()


def test_candidates_are_timed_in_turns_and_keep_their_fastest_call():
    """A candidate slowed for a while (another process's burst of load) keeps its fastest call, and every candidate
    gets the same number of calls, interleaved."""
    import time as _time

    order = []

    class Probe:
        def __init__(self, name, slow_calls, seconds):
            self.name, self.slow_calls, self.seconds, self.calls = name, slow_calls, seconds, 0

        def __call__(self, x):
            self.calls += 1
            order.append(self.name)
            _time.sleep(0.05 if self.calls <= self.slow_calls else self.seconds)

    a, b = Probe("a", 3, 0.002), Probe("b", 0, 0.02)
    times = select.interleaved_seconds({"a": (a, None), "b": (b, None)}, rounds=4)
    assert times["a"] < times["b"] < 0.05
    assert a.calls == b.calls == 5
    assert order[2:6] == ["a", "b", "a", "b"]  # after the warm-up calls, in turns
