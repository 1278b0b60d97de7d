import pytest


@pytest.fixture(scope="session")
def demo():
    """The bundled demo PRM, loaded once: the reward model of the RL tests (the very scorer `compute_score` uses
    with no model given, so the verl tests load no second copy)."""
    from edgeprm.rl.verl import scorer_for

    return scorer_for()
