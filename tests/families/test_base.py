"""What every family's head loading shares: shape checks that name the file and tensor."""


import pytest
import torch
from safetensors.torch import load_file, save_file

import edgeprm

from ..helpers import copy


def test_head_shape_mismatch_names_the_file(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "badhead")
    torch.save({"weight": torch.zeros(1, 7), "bias": torch.zeros(1)}, d / "reward_head.pt")
    with pytest.raises(ValueError, match=r"reward_head\.pt: weight has shape \(1, 7\), expected \(1, 40\)"):
        edgeprm.load(d)
    d2 = copy(checkpoints["step-classifier"], tmp_path / "badscore")
    sd = load_file(d2 / "model.safetensors")
    sd["score.2.weight"] = torch.zeros(3, 40)
    save_file(sd, d2 / "model.safetensors")
    with pytest.raises(ValueError, match=r"score\.2\.weight has shape \(3, 40\), expected \(2, 40\)"):
        edgeprm.load(d2)
