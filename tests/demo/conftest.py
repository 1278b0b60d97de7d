import random

import pytest

from edgeprm.demo.synthetic import generate


@pytest.fixture(scope="module")
def records():
    return generate(300, seed=random.randrange(10**6))
