"""Which family a checkpoint is: detected from its files, or forced with family=."""


import pytest

import edgeprm
from edgeprm.families import Family

from ..helpers import copy


@pytest.mark.parametrize("family", ["step-classifier", "value-head", "token-prob"])
def test_family_is_detected_from_the_files(scorers, family):
    assert scorers[family].family is Family(family)


def test_family_override(checkpoints):
    # The token-prob checkpoint is a plain causal LM with a step tag; force the value-head family: no head file.
    with pytest.raises(FileNotFoundError, match=r"reward_head\.pt is missing: a value-head PRM needs"):
        edgeprm.load(checkpoints["token-prob"], family="value-head")
    with pytest.raises(ValueError, match=r"family must be one of \('step-classifier', 'value-head', 'token-prob'\)"):
        edgeprm.load(checkpoints["token-prob"], family="classifier")


def test_unknown_directory_is_explained(tmp_path, checkpoints):
    d = copy(checkpoints["value-head"], tmp_path / "plain")
    (d / "reward_head.pt").unlink()
    with pytest.raises(ValueError, match="is none of the supported PRM layouts"):
        edgeprm.load(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        edgeprm.load(empty)
