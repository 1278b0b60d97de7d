"""ScoreResult: what goes out of a scorer, and into an output row."""

import json
import random

from edgeprm.results import ScoreResult


def test_to_dict_is_json_ready_and_leaves_the_row_its_own_id():
    steps = [random.random() for _ in range(random.randint(1, 5))] + [None]
    r = ScoreResult(steps, None, 0.5, truncated=True, num_tokens=99, id="7")
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d and d["id"] == "7" and d["step_rewards"] == steps
    row = {"id": 7, "problem": "p"}
    out = {**row, **r.to_dict(with_id=False)}
    assert out["id"] == 7 and out["truncated"] is True and out["num_tokens"] == 99
