"""What the quantization tests share: the CPU paths, bitsandbytes when present, sample rows."""


import pytest
import torch
from torch import nn

from edgeprm.quant.modules import FbgemmInt8Linear

try:
    import bitsandbytes as bnb
except ImportError:  # not a dependency: the default int8 path on CPU runs without it
    bnb = None


needs_bnb = pytest.mark.skipif(bnb is None, reason="bitsandbytes is not installed (pip install bitsandbytes); int4 "
                                                   "and the bnb-int8 kernel need it")


ROWS = [
    {"id": "a", "problem": "What is 12 * 3 + 4?", "steps": ["12 * 3 = 36.", "36 + 4 = 40.", "The answer is 40."]},
    {"id": "b", "problem": "Janet has 16 eggs and eats 3.", "solution": "She has 16 eggs.\n\nShe eats 3.\n\nSo 13."},
    {"id": "c", "problem": "Tom buys 5 bags of 12 apples.", "steps": ["5 * 12 = 60 apples."], "response": "60"},
]


# Every CPU path: (scheme, kernel).
PATHS = [pytest.param("int8", "fbgemm", id="int8-fbgemm"),
         pytest.param("int8", "bnb-int8", id="int8-bnb", marks=needs_bnb),
         pytest.param("int4", "bnb-nf4", id="int4-nf4", marks=needs_bnb)]


SCHEME_PARAMS = [pytest.param("int8", id="int8"), pytest.param("int4", id="int4", marks=needs_bnb)]


def mismatch_report(a: torch.Tensor, b: torch.Tensor) -> str:
    bad = (a != b).nonzero()
    return f"{len(bad)} of {a.numel()} differ; first at {bad[:5].tolist()}: {a[tuple(bad[0])]} vs {b[tuple(bad[0])]}"


QUANT_MODULES = {"fbgemm": FbgemmInt8Linear}
if bnb is not None:
    QUANT_MODULES.update({"bnb-int8": bnb.nn.Linear8bitLt, "bnb-nf4": bnb.nn.Linear4bit})


def linears(scorer):
    return {n: type(m) for n, m in scorer.backbone.named_modules()
            if isinstance(m, (nn.Linear, *QUANT_MODULES.values()))}
