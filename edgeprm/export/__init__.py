"""Writing ONNX bundles: `edgeprm export MODEL OUT_DIR [--quantization none|int8|int4]` (`onnx.py`).

A bundle is read by the torch-free ONNX Runtime backend, `edgeprm.backends.onnx`, which also defines its format
(`BundleManifest`). See README.md here for the layout, the runtime and the measured figures.
"""
