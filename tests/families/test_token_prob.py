"""The token-prob family: its step tag and token pair."""


import pytest

import edgeprm


def test_step_tag_must_be_one_token(checkpoints):
    with pytest.raises(ValueError, match=r"the step tag '<<STEP>>' must be exactly one token"):
        edgeprm.load(checkpoints["token-prob"], step_tag="<<STEP>>")
