"""Fresh random rows for the server tests: synthetic arithmetic problems in every input shape the schema takes."""

import random

from edgeprm.demo.synthetic import generate


def random_rows(n: int, seed: int | None = None) -> list[dict]:
    """n rows: steps lists, solution strings, some with a response, ids of both JSON types, an extra field."""
    seed = random.randrange(10**6) if seed is None else seed
    rng = random.Random(seed)
    out = []
    for i, rec in enumerate(generate((n + 3) // 4, candidates=4, seed=seed)[:n]):
        row = {"problem": rec["problem"]}
        if rng.random() < 0.3:
            row["solution"] = "\n\n".join(rec["steps"])
        else:
            row["steps"] = list(rec["steps"])
        if rng.random() < 0.2:
            row["response"] = f"The answer is {rec['answer']}."
        if rng.random() < 0.7:
            row["id"] = i if rng.random() < 0.3 else f"q{seed}-{i}"
        if rng.random() < 0.3:
            row["is_correct"] = rec["is_correct"]
        out.append(row)
    return out


def assert_scored_like(got: dict, sent: dict, want, atol: float = 1e-6) -> None:
    """A returned row is the sent row plus the direct ScoreResult `want`'s fields (rewards within atol)."""
    for k, v in sent.items():
        assert got[k] == v, (k, got[k], v)
    assert got["truncated"] == want.truncated and got["num_tokens"] == want.num_tokens
    assert len(got["step_rewards"]) == len(want.step_rewards)
    pairs = [*zip(got["step_rewards"], want.step_rewards), (got["trajectory_reward"], want.trajectory_reward),
             (got["score"], want.score)]
    for a, b in pairs:
        assert (a is None) == (b is None)
        if a is not None:
            assert abs(a - b) <= atol, (a, b, sent)
