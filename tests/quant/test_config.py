"""Quantization schemes and QuantConfig: the choices and their errors."""


import pytest

import edgeprm
from edgeprm.config import TORCH_QUANTIZATIONS as QUANTIZATIONS
from edgeprm.quant.config import QUANT_SCHEMES as SCHEMES
from edgeprm.quant.config import QuantConfig


def test_schemes_are_the_scorer_choices():
    assert QUANTIZATIONS == (None, *SCHEMES) == (None, "int8", "int4")
    assert {s.storage for s in SCHEMES.values()} == {"int8", "nf4"}
    with pytest.raises(ValueError, match=r"quantization must be one of \('int8', 'int4'\); got 'int3'"):
        QuantConfig("int3")
    with pytest.raises(ValueError, match=r"kernel 'bnb-nf4' does not run int8 weights; choose one of "
                                         r"\('fbgemm', 'onednn', 'bnb-int8'\)"):
        QuantConfig("int8", kernel="bnb-nf4")
    with pytest.raises(ValueError, match=r"the fbgemm kernel runs on \('cpu',\) only; got device 'cuda'"):
        QuantConfig("int8", kernel="fbgemm").kernel_for("cuda")
    # CUDA runs bitsandbytes; a CPU runs the kernel measured fastest on it (tests/quant/test_select.py).
    assert QuantConfig("int8").kernel_for("cuda") == "bnb-int8" and QuantConfig("int4").kernel_for("cuda") == "bnb-nf4"
    assert QuantConfig("int8").kernel_for("cpu") in SCHEMES["int8"].cpu_kernels == ("fbgemm", "onednn", "bnb-int8")
    assert QuantConfig("int4").kernel_for("cpu") in SCHEMES["int4"].cpu_kernels == ("nf4-dense", "bnb-nf4")
    with pytest.raises(ValueError, match="nf4_blocksize must be one of"):
        QuantConfig("int4", nf4_blocksize=48)
    with pytest.raises(ValueError, match="keep must be a tuple of module-name patterns"):
        QuantConfig("int8", keep="layers.0.*")
    with pytest.raises(ValueError, match="quantization must be one of"):
        edgeprm.load(None, quantization="fp8")
