"""8-bit and 4-bit weights for the torch backend.

- `config.py`      schemes (`QUANT_SCHEMES`) and `QuantConfig` (torch-free);
- `primitives.py`  quantize / dequantize functions, bit-exact against torch and bitsandbytes;
- `modules.py`     the quantized Linear and embedding modules, and the transform that builds them while loading;
- `checkpoint.py`  quantized checkpoints on disk (`QuantManifest`, `save_quantized`, `plan_backbone`).

`edgeprm.load(model, quantization="int8" | "int4" | QuantConfig(...))` is the way in; `edgeprm quantize` writes a
checkpoint.
"""
