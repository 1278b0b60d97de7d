"""Tiny PRM checkpoints in the real on-disk layouts (`checkpoints.py`), for tests, benchmarks and users' own tests.

    from edgeprm.testing import BUILDERS
    path = BUILDERS["step-classifier"](tmp_dir, seed=0)   # a random Qwen2ForProcessRewardModel checkpoint
"""

from edgeprm.testing.checkpoints import (
    BUILDERS,
    build_step_classifier,
    build_token_prob,
    build_tokenizer,
    build_value_head,
    tiny_qwen2_config,
)

__all__ = ["BUILDERS", "build_step_classifier", "build_token_prob", "build_tokenizer", "build_value_head",
           "tiny_qwen2_config"]
