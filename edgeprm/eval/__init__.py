"""Evaluating PRMs the way the field reports them, and holding small variants to their full-size model.

- `parity.py`: fidelity of score files (per-step |delta|, rank correlation, Best-of-N agreement);
- `processbench.py`: ProcessBench (find the first wrong step): the reader, the official metric, the threshold sweep;
- `calibration.py`: expected calibration error of step rewards against step labels;
- `bon.py`: Best-of-N accuracy per aggregation against majority vote, random pick and oracle;
- `scoring.py`: scoring an evaluation's rows with one scorer, resumable per-row predictions;
- `gate.py`: the fidelity gate, the same evaluation for a model and its variants side by side.

Torch-free: the evaluators load scorers through `edgeprm.load`, so an ONNX bundle is evaluated without torch.
"""
