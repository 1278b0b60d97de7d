"""edgeprm.client.Client against the real server: the scorer's API over HTTP, and the RL adapters built on it."""

import numpy as np
import pytest

from edgeprm.client import Client
from edgeprm.rl import PRMReward, compute_score, remote_reward, token_rewards
from edgeprm.trajectory import Trajectory

from .conftest import API_KEY
from .rows import random_rows


def same(a, b, atol=1e-6):
    assert (a.id, a.truncated, a.num_tokens) == (b.id, b.truncated, b.num_tokens)
    assert len(a.step_rewards) == len(b.step_rewards)
    for x, y in [*zip(a.step_rewards, b.step_rewards), (a.trajectory_reward, b.trajectory_reward), (a.score, b.score)]:
        assert (x is None) == (y is None) and (x is None or abs(x - y) <= atol)


@pytest.fixture(scope="module")
def remote(tiny_server):
    with Client(tiny_server.url, api_key=API_KEY) as c:
        yield c


def test_the_scorer_api_over_http(remote, tiny_scorer):
    rows = random_rows(70)  # over the server's 64 rows per request: sent in two requests
    for got, want in zip(remote.score_batch(rows, progress=True), tiny_scorer.score_batch(rows)):
        same(got, want)
    problem = rows[0]["problem"]
    steps = ["2 + 2 = 4", "The answer is 4."]
    same(remote.score(problem, steps), tiny_scorer.score(problem, steps))
    same(remote.score(problem, "2 + 2 = 4\n\nSo 4.", response="4"), tiny_scorer.score(problem, "2 + 2 = 4\n\nSo 4.",
                                                                                        response="4"))
    candidates = [steps, "2 + 2 = 5\n\nThe answer is 5.", Trajectory(problem, ("4",), id="t")]
    best, results = remote.best_of_n(problem, candidates)
    want_best, want = tiny_scorer.best_of_n(problem, candidates)
    assert best == want_best
    for a, b in zip(results, want):
        same(a, b)
    assert remote.health()["status"] == "ok" and remote.max_rows_per_request == 64


def test_errors_come_back_as_the_local_ones(remote, tiny_server):
    with pytest.raises(ValueError, match=r"rejected the request \(422\): body.rows.1.steps: .*at least 1"):
        remote.score_batch([{"problem": "x", "steps": ["a"]}, {"problem": "y", "steps": []}])
    with pytest.raises(ValueError, match="over the model's limit"):
        remote.score("x", ["7 + 8 = 15. " * 400])
    with pytest.raises(PermissionError, match="pass api_key= or set EDGEPRM_API_KEY"):
        Client(tiny_server.url).score("x", ["a"])
    with pytest.raises(ValueError, match="best_of_n needs at least one candidate"):
        remote.best_of_n("x", [])


def test_rl_adapters_score_remotely_as_they_do_locally(remote, tiny_server, tiny_scorer, tmp_path):
    problems = [r["problem"] for r in random_rows(6)]
    completions = ["3 + 4 = 7\n\nThe answer is 7.", "", "9 * 9 = 81", "1 + 1 = 3\n\nSo 3.", "  \n", "5 - 2 = 3"]
    local = PRMReward(tiny_scorer)(problems, completions)
    far = remote_reward(tiny_server.url, api_key=API_KEY)(problems, completions)
    assert len(far) == 6 and max(abs(a - b) for a, b in zip(far, local)) <= 1e-6
    got = compute_score("synthetic", completions[0], "7", {"question": problems[0]}, url=tiny_server.url,
                        api_key=API_KEY)
    assert abs(got["prm"] - local[0]) <= 1e-6
    from edgeprm.testing import build_tokenizer

    tok = build_tokenizer(tmp_path, seed=9)
    for c in completions:
        a = token_rewards(tok, problems[0], c, remote)
        b = token_rewards(tok, problems[0], c, tiny_scorer)
        assert a.shape == b.shape and np.abs(a - b).max(initial=0) <= 1e-6
    q = f"<|im_start|>user\n{problems[0]}<|im_end|>\n<|im_start|>assistant\n{completions[0]}<|im_end|>"
    assert abs(remote.get_reward([q])[0] - local[0]) <= 1e-6
