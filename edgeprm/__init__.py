"""edgeprm: process-reward-model scoring on small hardware.

    scorer = edgeprm.load("path/or/hub-id")
    r = scorer.score(problem, ["step 1", "step 2"])
    r.step_rewards, r.trajectory_reward, r.score
"""

from edgeprm.loading import FAMILIES, Family, TokenProbSpec
from edgeprm.scorer import Scorer, ScoreResult, load
from edgeprm.trajectory import Trajectory

__version__ = "0.1.0"
__all__ = ["FAMILIES", "Family", "ScoreResult", "Scorer", "TokenProbSpec", "Trajectory", "load", "__version__"]
