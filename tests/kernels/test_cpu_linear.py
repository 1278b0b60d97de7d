"""oneDNN's packed fp32 Linear against torch's, and the torch backend's choice of fp32 engine."""

import pytest
import torch

import edgeprm
from edgeprm.kernels import cpu_linear
from edgeprm.quant import select

from ..helpers import close, items

pytestmark = pytest.mark.skipif(not cpu_linear.available(), reason="this torch build has no oneDNN packed Linear")


@pytest.mark.parametrize("shape", [(7, 48), (2, 33, 48), (1, 512, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_equals_torch_linear_on_fresh_inputs(shape, bias):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    lin = torch.nn.Linear(48, 80, bias=bias).requires_grad_(False)
    lin.weight.copy_(torch.randn(80, 48, generator=g))
    x = torch.randn(*shape, generator=g)
    want = lin(x)
    got = cpu_linear.OnednnLinear(lin)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    # a non-contiguous view of the input gives the same
    xt = torch.randn(*shape[:-1], 48, 2, generator=g)[..., 0]
    torch.testing.assert_close(cpu_linear.OnednnLinear(lin)(xt), lin(xt), rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match="float32"):
        cpu_linear.OnednnLinear(lin)(x.bfloat16())


def test_pack_linears_replaces_only_the_decoder_layers():
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()),
                                        torch.nn.Linear(8, 4).to(torch.bfloat16)])
    model.head = torch.nn.Linear(4, 1)
    assert cpu_linear.pack_linears(model) == 1
    assert isinstance(model.layers[0][0], cpu_linear.OnednnLinear)
    assert type(model.layers[1]) is torch.nn.Linear and type(model.head) is torch.nn.Linear  # bf16 and the head


@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_scorer_on_onednn_fp32_equals_the_mkl_scorer(checkpoints, family, monkeypatch):
    trajs = items(6, 5)
    got = {}
    for engine in ("mkl", "onednn"):
        monkeypatch.setenv("EDGEPRM_FP32_GEMM", engine)
        select.fp32_gemm.cache_clear()
        scorer = edgeprm.load(checkpoints[family], device="cpu", dtype="float32")
        assert scorer.fp32_gemm == engine
        packed = sum(isinstance(m, cpu_linear.OnednnLinear) for m in scorer.backbone.modules())
        assert (packed > 0) == (engine == "onednn")
        got[engine] = scorer.score_batch(trajs)
    select.fp32_gemm.cache_clear()
    close(got["onednn"], got["mkl"], 2e-5)


def test_fp32_gemm_choice_is_measured_and_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEPRM_FP32_GEMM", raising=False)
    monkeypatch.setenv("EDGEPRM_CACHE", str(tmp_path))
    select.fp32_gemm.cache_clear()
    try:
        choice = select.fp32_gemm()
        import json

        entry = next(v for k, v in json.loads(select.cache_file().read_text()).items() if k.startswith("fp32-gemm"))
        assert entry["kernel"] == choice and set(entry["ms"]) == {"mkl", "onednn"}
        assert all(v > 0 for v in entry["ms"].values())
    finally:
        select.fp32_gemm.cache_clear()


def test_gated_mlp_fuses_gate_and_up_and_unpacks_back():
    from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

    cfg = Qwen2Config(hidden_size=24, intermediate_size=41)
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([Qwen2MLP(cfg).requires_grad_(False)])
    x = torch.randn(3, 7, 24)
    want = model.layers[0](x)
    dense = {k: v.clone() for k, v in model.layers[0].state_dict().items()}
    assert cpu_linear.pack_linears(model) == 3
    fused = model.layers[0]
    assert isinstance(fused, cpu_linear.GatedMLP) and fused.gate_up.out_features == 82
    torch.testing.assert_close(fused(x), want, rtol=1e-5, atol=1e-5)
    assert cpu_linear.unpack_linears(model) == 3
    back = model.layers[0]
    assert type(back) is Qwen2MLP and all(type(getattr(back, n)) is torch.nn.Linear
                                          for n in ("gate_proj", "up_proj", "down_proj"))
    for k, v in back.state_dict().items():
        torch.testing.assert_close(v, dense[k], rtol=0, atol=0)
