"""fp32 Linear layers on oneDNN with weights packed once, for CPUs where torch's default BLAS is the slower GEMM.

torch runs an fp32 `F.linear` on the CPU through MKL's sgemm. On some CPUs oneDNN's own fp32 GEMM, given a weight
reordered into its blocked layout once at load time, is about twice as fast (measured on an AMD EPYC with AVX-512,
2 threads, 512 x 1536 -> 8960: MKL 86 ms, oneDNN with the packed weight 45 ms); on others MKL wins. torch's own
inductor uses this pair of operators (`mkldnn._reorder_linear_weight`, `mkldnn._linear_pointwise`) for CPU Linear
layers it freezes; here they replace the decoder's Linear modules directly, without compiling the model.
`edgeprm.quant.select.fp32_gemm()` measures which engine is faster on this CPU; the torch backend packs only then.

The packed weight replaces the dense one (same bytes), so memory does not grow. The result differs from MKL's by
float32 summation order only (~1e-7 relative).
"""

from __future__ import annotations

import torch

BATCH_HINT = 512  # the rows oneDNN packs the weight for (one prefill); any row count runs


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias on oneDNN's fp32 GEMM; `weight` packed (`OnednnLinear`) or a plain [out, in] matrix,
    such as a chunk of weights expanded right before its product (`edgeprm.quant.modules.Nf4DenseLinear`)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def available() -> bool:
    """Whether this torch build has oneDNN's packed fp32 Linear (and it runs here)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        lin, x = torch.nn.Linear(16, 8).requires_grad_(False), torch.randn(3, 16)
        return bool(torch.allclose(OnednnLinear(lin)(x), lin(x), atol=1e-5))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class OnednnLinear(torch.nn.Module):
    """y = x @ W.T + b on oneDNN, W packed once. For inference (no autograd through the packed weight)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        w = linear.weight.detach().float().contiguous()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, BATCH_HINT)
        self.bias = None if linear.bias is None else linear.bias.detach().float().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"OnednnLinear runs float32 inputs; got {x.dtype}")
        return linear(x, self.packed, self.bias)

    def storage_bytes(self) -> int:
        """Bytes of the packed weight and the bias (the packed layout holds the same float32 values)."""
        return 4 * (self.in_features * self.out_features + (0 if self.bias is None else self.out_features))

    def to_linear(self) -> torch.nn.Linear:
        """The same layer as a plain nn.Linear (dense weight)."""
        lin = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        lin.requires_grad_(False)
        lin.weight.copy_(self.packed.to_dense())
        if self.bias is not None:
            lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linears(model: torch.nn.Module, under: str = "layers") -> int:
    """Replace every float32 nn.Linear below `model.<under>` (the decoder layers; embeddings and heads are left
    alone) by an OnednnLinear; returns how many were replaced."""
    root = getattr(model, under, None)
    if root is None:
        return 0
    # (parent, name) pairs only: holding the Linear modules themselves would keep every dense weight alive until
    # the end, doubling the peak (measured: 2.73 GB against 2.18 GB unpacked on a 4-layer slice of the 1.5B shape)
    places = [(parent, name) for parent in root.modules() for name, child in parent.named_children()
              if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32
              and child.weight.device.type == "cpu"]
    for parent, name in places:
        setattr(parent, name, OnednnLinear(getattr(parent, name)))
    n = len(places)
    # (parent, name) pairs again: a list of the modules would keep every unfused gate and up weight alive
    mlps = [(parent, name) for parent in root.modules() for name, child in parent.named_children()
            if GatedMLP.fits(child)]
    for parent, name in mlps:
        setattr(parent, name, GatedMLP(getattr(parent, name)))
    return n


class GatedMLP(torch.nn.Module):
    """A decoder's gated MLP, down(act(gate(x)) * up(x)), with gate and up as one packed GEMM and the product
    taken in place. Measured on the 4-layer Qwen2.5-1.5B slice (AMD EPYC with AVX-512, 2 threads, one 512-token
    prefill, best of 7, three alternations): 887 -> 917 tok/s for the backbone (+3.4 %), from one GEMM of twice the
    width and two fewer [T, I] temporaries."""

    def __init__(self, mlp: torch.nn.Module):
        super().__init__()
        gate, up = mlp.gate_proj, mlp.up_proj
        self.intermediate = gate.out_features
        fused = torch.nn.Linear(gate.in_features, 2 * self.intermediate, bias=False).requires_grad_(False)
        fused.weight.copy_(torch.cat([gate.packed.to_dense(), up.packed.to_dense()]))
        self.gate_up, self.down_proj, self.act_fn = OnednnLinear(fused), mlp.down_proj, mlp.act_fn
        del mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.template = [mlp]  # the original module, emptied (a list: not a submodule), for `to_module`

    @staticmethod
    def fits(m: torch.nn.Module) -> bool:
        gate, up = getattr(m, "gate_proj", None), getattr(m, "up_proj", None)
        return (type(m).__name__.endswith("MLP") and isinstance(gate, OnednnLinear) and isinstance(up, OnednnLinear)
                and gate.bias is None and up.bias is None and gate.in_features == up.in_features
                and gate.out_features == up.out_features and hasattr(m, "down_proj") and hasattr(m, "act_fn"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gu = self.gate_up(x)
        i = self.intermediate
        return self.down_proj(self.act_fn(gu[..., :i]).mul_(gu[..., i:]))

    def to_module(self) -> torch.nn.Module:
        """The original MLP module with dense gate, up and down Linear layers."""
        mlp = self.template[0]
        dense = self.gate_up.to_linear()
        for name, rows in (("gate_proj", slice(0, self.intermediate)), ("up_proj", slice(self.intermediate, None))):
            lin = torch.nn.Linear(dense.in_features, self.intermediate, bias=False).requires_grad_(False)
            lin.weight.copy_(dense.weight[rows])
            setattr(mlp, name, lin)
        down = self.down_proj
        mlp.down_proj = down.to_linear() if isinstance(down, OnednnLinear) else down
        return mlp


def unpack_linears(model: torch.nn.Module) -> int:
    """Turn every OnednnLinear below `model` back into an nn.Linear (before quantizing in place); returns how many."""
    n = 0
    for module in list(model.modules()):
        if isinstance(module, GatedMLP):
            continue  # unpacked whole, by its parent
        for child_name, child in list(module.named_children()):
            if isinstance(child, GatedMLP):
                setattr(module, child_name, child.to_module())
                n += 3
            elif isinstance(child, OnednnLinear):
                setattr(module, child_name, child.to_linear())
                n += 1
    return n
