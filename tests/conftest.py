import os

# Triton kernels run under the interpreter on CPU tensors in tests; it must be set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from edgeprm.testing import BUILDERS  # noqa: E402

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_model_solutions.jsonl"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per family, in the real on-disk layouts, built once per test session."""
    root = tmp_path_factory.mktemp("ckpt")
    return {fam: build(root / fam, seed=i) for i, (fam, build) in enumerate(BUILDERS.items())}


@pytest.fixture(scope="session")
def scorers(checkpoints):
    import edgeprm

    return {fam: edgeprm.load(path, device="cpu") for fam, path in checkpoints.items()}


@pytest.fixture(scope="session")
def bundle(checkpoints, tmp_path_factory):
    """bundle(family, scheme) -> an exported bundle directory, built once per session on first use (quantized
    bundles from the fp32 one, as a big model would be: one trace, then onnxruntime's quantizers)."""
    from edgeprm.export.onnx import ExportConfig, export

    root = tmp_path_factory.mktemp("bundles")
    cache = {}

    def get(family: str, scheme: str = "none") -> Path:
        if (family, scheme) not in cache:
            source = checkpoints[family] if scheme == "none" else get(family)
            cache[family, scheme] = export(source, root / f"{family}-{scheme}", ExportConfig(scheme))
        return cache[family, scheme]

    return get
