"""What edgeprm decides from the CPU it finds: the features read from /proc/cpuinfo, and on CPUs of other kinds than
this one (an AVX2-only laptop or server, AVX-512 with BF16, AMX, ARM) the dtype and kernels chosen there."""

import warnings

import pytest
import torch

from edgeprm import hardware
from edgeprm.backends import torch as torch_backend
from edgeprm.hardware import CPUInfo
from edgeprm.quant import select

# Flags as the kernel lists them on real machines (trimmed to the ones that matter, plus some that do not).
ZEN3 = "fpu sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand avx2 bmi2 sha_ni vaes vpclmulqdq"
SAPPHIRE_RAPIDS = ZEN3 + (" avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni amx_bf16"
                          " amx_tile amx_int8 avx512_fp16")
GRAVITON3 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve bf16 i8mm"


def cpu(model: str, flags: str, arch: str = "x86_64") -> CPUInfo:
    return CPUInfo(model, arch, 2, frozenset(flags.split()), None)


AVX2_ONLY = cpu("AMD EPYC 7B13 (Zen 3)", ZEN3)
AVX512_BF16 = cpu("AMD EPYC 9B14 (Zen 4)", ZEN3 + " avx512f avx512bw avx512vl avx512_vnni avx_vnni avx512_bf16")
AMX = cpu("Intel Xeon Platinum 8481C", SAPPHIRE_RAPIDS)
ARM = cpu("", GRAVITON3, "aarch64")


def test_the_first_processor_of_proc_cpuinfo_gives_the_model_and_flags(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n"
                 f"flags\t\t: {ZEN3}\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: avx512f\n")
    model, flags = hardware._proc_cpuinfo(f)
    assert model == "AMD EPYC 7B13 64-Core Processor"
    assert flags == frozenset(ZEN3.split()) and "avx512f" not in flags
    f.write_text(f"processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: {GRAVITON3}\nCPU part\t: 0xd40\n")  # ARM
    assert hardware._proc_cpuinfo(f)[1] == frozenset(GRAVITON3.split())
    assert hardware._proc_cpuinfo(tmp_path / "absent")[1] == frozenset()


@pytest.mark.parametrize(("info", "bf16", "dot", "kind"), [
    (AVX2_ONLY, False, "avx2", "avx2"),
    (AVX512_BF16, True, "vnni", "avx2+avx512f+avx512_vnni+avx_vnni+avx512_bf16"),
    (AMX, True, "amx", "avx2+avx512f+avx512_vnni+avx_vnni+avx512_bf16+amx_int8+amx_bf16"),
    (ARM, True, "neon-dot", "asimddp+bf16+sve"),
], ids=["avx2", "avx512-bf16", "amx", "arm"])
def test_the_features_that_decide_kernels(info, bf16, dot, kind):
    assert info.native_bf16 is bf16 and info.int8_dot == dot and info.kind == kind
    summary = info.summary()
    assert f"native bf16 {'yes' if bf16 else 'no'}" in summary and f"int8 dot products: {dot}" in summary


def test_this_machine_is_read_once_and_agrees_with_torch():
    info = hardware.cpu_info()
    assert info is hardware.cpu_info() and info.cores >= 1
    if info.arch in ("x86_64", "AMD64"):
        assert info.has("avx2") == torch.cpu._is_avx2_supported()
        assert info.has("avx512_bf16") == torch.cpu._is_avx512_bf16_supported()
        assert info.torch_capability == torch.backends.cpu.get_cpu_capability()


@pytest.fixture
def on_cpu(monkeypatch, tmp_path):
    """on_cpu(info): edgeprm's choices see `info` as this machine's CPU (fresh kernel-choice cache)."""
    monkeypatch.setenv("EDGEPRM_CACHE", str(tmp_path))
    monkeypatch.delenv(select.PROBE_ENV, raising=False)

    def use(info: CPUInfo) -> None:
        monkeypatch.setattr(select, "cpu_info", lambda: info)
        monkeypatch.setattr(torch_backend, "cpu_info", lambda: info)
        select.cpu_kernel.cache_clear()

    yield use
    select.cpu_kernel.cache_clear()


@pytest.mark.parametrize(("info", "int8", "int4"), [
    (AVX2_ONLY, "fbgemm", "nf4-dense"), (AVX512_BF16, "onednn", "bnb-nf4"), (AMX, "onednn", "bnb-nf4"),
], ids=["avx2", "avx512-bf16", "amx"])
def test_without_probing_each_kind_of_cpu_gets_its_measured_preference(on_cpu, monkeypatch, info, int8, int4):
    """The preferences where probing is off (EDGEPRM_KERNEL_PROBE=0), from bench/QUANT.md's measurements: on AVX2
    without VNNI fbgemm's int8 GEMM and NF4 expanded to fp32 before a dense GEMM (bitsandbytes' NF4 has no fast CPU
    kernel without AVX512-BF16); with VNNI oneDNN's int8 GEMM; with native bf16 bitsandbytes NF4."""
    on_cpu(info)
    monkeypatch.setenv(select.PROBE_ENV, "0")
    monkeypatch.setattr(select, "time_kernels", lambda *a, **k: pytest.fail("must not measure"))
    assert select.cpu_kernel("int8") == int8
    want4 = int4 if select.available(int4) else "nf4-dense"
    assert select.cpu_kernel("int4") == want4


def test_a_choice_measured_on_one_kind_of_cpu_is_not_used_on_another(on_cpu, monkeypatch):
    """The kernel-choice cache is keyed by the CPU's kind: a home directory shared by an AVX-512 server and an
    AVX2 laptop (or a CPU swapped under a VM) measures again instead of taking the other machine's winner."""
    timed = []

    def fake_time(scheme, kernels, dtype, shape=select.PROBE_SHAPE):
        timed.append(scheme)
        fastest = kernels[-1] if info is AVX512_BF16 else kernels[0]
        return {k: 0.001 if k == fastest else 0.01 for k in kernels}

    monkeypatch.setattr(select, "time_kernels", fake_time)
    candidates = [k for k in select.QUANT_SCHEMES["int8"].cpu_kernels if select.available(k)
                  and k not in select.ASKED_FOR_ONLY]
    info = AVX512_BF16
    on_cpu(info)
    assert select.cpu_kernel("int8") == candidates[-1] and timed == ["int8"]
    info = AVX2_ONLY
    on_cpu(info)
    assert select.cpu_kernel("int8") == candidates[0] and timed == ["int8", "int8"]
    info = AVX512_BF16
    on_cpu(info)  # the first machine's choice is still on record for its kind
    assert select.cpu_kernel("int8") == candidates[-1] and timed == ["int8", "int8"]


def test_dtype_auto_is_fp32_on_every_cpu_and_bf16_warns_only_without_native_units(on_cpu):
    cpu_device = torch.device("cpu")
    for info in (AVX2_ONLY, AVX512_BF16, AMX, ARM):
        on_cpu(info)
        assert torch_backend.resolve_dtype("auto", cpu_device) == torch.float32
    on_cpu(AVX2_ONLY)
    with pytest.warns(UserWarning, match=r"no native bfloat16 matrix units: measured just now, a bfloat16 matmul "
                                         r"runs at \d+ GFLOP/s against \d+ GFLOP/s in float32.*dtype='float32'"):
        assert torch_backend.resolve_dtype("bfloat16", cpu_device) == torch.bfloat16
    with pytest.warns(UserWarning, match="no native float16"):
        torch_backend.resolve_dtype("float16", cpu_device)
    for info in (AVX512_BF16, AMX, ARM):
        on_cpu(info)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch_backend.resolve_dtype("bfloat16", cpu_device) == torch.bfloat16
    on_cpu(AMX)  # AMX-FP16 / AVX512-FP16 units: fp16 is native there
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch_backend.resolve_dtype("float16", cpu_device) == torch.float16
