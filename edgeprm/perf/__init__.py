"""Measuring edgeprm on the user's machine: `edgeprm bench` (runner.py), random models of real shapes (shapes.py),
and llama.cpp as a peer on the same weights (gguf.py)."""
