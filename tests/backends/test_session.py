"""KV-cached sessions (edgeprm.backends.session): equal to full scoring step by step, for every family, at
adversarial seams; fork, rollback, batched extend, shared prompts and chunked prefill."""

import os
import random

import pytest

import edgeprm
from edgeprm.encoding import TooLongError
from edgeprm.testing import BUILDERS

FAMILIES = list(BUILDERS)
ATOL = 1e-5
PROBLEM = "Tom has 37 apples and buys 5 bags of 12. How many now?"
# Pieces that merge across step boundaries under byte-level BPE: leading spaces, newlines that join the "\n\n"
# separator, digits after digits, combining accents after letters, reserved strings that must stay text.
PIECES = ["12", "3", " 4", "+5", " = ", "é", "e\u0301", "\u0301", " x", "\n", "  ", "ab", "ки", " ки", "<extra_0>",
          "1.5", "\t7", ".", "\n\n", "-", "apples"]


def fresh_rng():
    seed = int.from_bytes(os.urandom(4), "little")
    return random.Random(seed), seed


def random_step(rng) -> str:
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))
    return text if text.strip() else "7" + text


def encodable_steps(scorer, rng, n: int) -> list[str]:
    """n random steps that the family can encode (a token-prob step whose text swallows the step tag gets a
    full stop: the scorer rejects it, by design, with a message)."""
    steps = []
    while len(steps) < n:
        s = random_step(rng)
        try:
            scorer.score(PROBLEM, steps + [s])
        except ValueError as e:
            assert "merged" in str(e) or "same token" in str(e), e
            continue
        steps.append(s)
    return steps


def assert_results_close(got, want, where: str):
    assert len(got.step_rewards) == len(want.step_rewards), where
    for a, b in zip(got.step_rewards, want.step_rewards):
        assert (a is None) == (b is None), where
        if a is not None:
            assert abs(a - b) <= ATOL, f"{where}: step {a} vs {b}"
    assert (got.trajectory_reward is None) == (want.trajectory_reward is None), where
    if want.trajectory_reward is not None:
        assert abs(got.trajectory_reward - want.trajectory_reward) <= ATOL, where
    assert (got.score != got.score) == (want.score != want.score), where  # NaN alike: no step kept
    if want.score == want.score:
        assert abs(got.score - want.score) <= ATOL, f"{where}: score {got.score} vs {want.score}"
    assert (got.truncated, got.num_tokens) == (want.truncated, want.num_tokens), where


@pytest.fixture(params=FAMILIES)
def case(request, scorers):
    """(scorer of each family, a fresh rng, its seed)."""
    rng, seed = fresh_rng()
    return scorers[request.param], rng, seed


def assert_ids_agree(session):
    """The cached token ids are a prefix of the whole text's tokenization, as `score` encodes it."""
    enc = session.scorer.encoder.encode(session._trajectory(session.steps), session.scorer.truncate)
    assert session._view.ids == tuple(enc.ids[: session.cached_tokens])


def test_session_equals_full_scoring_step_by_step(case):
    scorer, rng, seed = case
    for _ in range(4):
        steps = encodable_steps(scorer, rng, rng.randint(2, 7))
        session = scorer.session(PROBLEM)
        for k, step in enumerate(steps):
            reward = session.add_step(step)
            want = scorer.score(PROBLEM, steps[: k + 1])
            assert abs(reward - want.step_rewards[-1]) <= ATOL, f"seed {seed}, steps {steps[:k + 1]!r}"
            assert_ids_agree(session)
            for a, b in zip(session.step_rewards, want.step_rewards):
                assert abs(a - b) <= ATOL, f"seed {seed}"
        assert_results_close(session.finish(), scorer.score(PROBLEM, steps), f"seed {seed}, {steps!r}")
        response = random_step(rng)
        try:
            want = scorer.score(PROBLEM, steps, response)
        except ValueError:
            continue
        assert_results_close(session.finish(response), want, f"seed {seed}, {steps!r} + {response!r}")
        # finish leaves the session as it was: more steps may follow
        more = encodable_steps(scorer, rng, len(steps) + 1)[-1:]
        try:
            want = scorer.score(PROBLEM, steps + more)
        except ValueError:
            continue
        assert abs(session.add_step(more[0]) - want.step_rewards[-1]) <= ATOL, f"seed {seed}"


def test_add_steps_and_session_with_steps(case):
    scorer, rng, seed = case
    steps = encodable_steps(scorer, rng, 5)
    want = scorer.score(PROBLEM, steps)
    session = scorer.session(PROBLEM, steps[:2])
    got = session.add_steps(steps[2:])
    assert len(got) == 3
    for a, b in zip(got, want.step_rewards[2:]):
        assert abs(a - b) <= ATOL, f"seed {seed}"
    assert_results_close(session.finish(), want, f"seed {seed}")


def test_fork_shares_the_prefix_and_branches_stay_independent(case):
    scorer, rng, seed = case
    base = encodable_steps(scorer, rng, 3)
    session = scorer.session(PROBLEM, base)
    branch = session.fork()
    # the fork holds the very same spans: no key or value was copied
    assert branch._view.tip is session._view.tip and branch.cached_tokens == session.cached_tokens
    a_steps = encodable_steps(scorer, rng, 2)
    b_steps = encodable_steps(scorer, rng, 1)
    scorer.extend([session, branch], [a_steps[0], b_steps[0]])
    session.add_step(a_steps[1])
    assert branch.steps == tuple(base + b_steps) and session.steps == tuple(base + a_steps)
    chain_a, chain_b = session._view.chain(), branch._view.chain()
    # the branches' first span holds the same memory (a seam may have narrowed it: a view, never a copy)
    assert chain_a[0].kv[0][0].data_ptr() == chain_b[0].kv[0][0].data_ptr(), "the branches' first span is shared"
    assert_results_close(session.finish(), scorer.score(PROBLEM, base + a_steps), f"seed {seed}")
    assert_results_close(branch.finish(), scorer.score(PROBLEM, base + b_steps), f"seed {seed}")


def test_rollback(case):
    scorer, rng, seed = case
    steps = encodable_steps(scorer, rng, 5)
    session = scorer.session(PROBLEM, steps)
    session.rollback(2)
    assert session.steps == tuple(steps[:3])
    assert_ids_agree(session)
    for a, b in zip(session.step_rewards, scorer.score(PROBLEM, steps[:3]).step_rewards):
        assert abs(a - b) <= ATOL, f"seed {seed}"
    other = encodable_steps(scorer, rng, 2)
    session.add_steps(other)
    assert_results_close(session.finish(), scorer.score(PROBLEM, steps[:3] + other), f"seed {seed}")
    session.rollback(len(session.steps))
    assert session.steps == () and session.cached_tokens == 0
    assert abs(session.add_step(steps[0]) - scorer.score(PROBLEM, steps[:1]).step_rewards[0]) <= ATOL
    with pytest.raises(ValueError, match="rollback takes 0..1 steps"):
        session.rollback(2)


def test_batched_extend_over_sessions_of_different_lengths(case):
    scorer, rng, seed = case
    problems = [PROBLEM, "Mia has 3 jars of 14 marbles. She loses 9. How many are left?", "2 + 2?"]
    sessions, histories = [], []
    for i in range(6):
        steps = encodable_steps(scorer, rng, i % 4)
        problem = problems[i % 3]
        sessions.append(scorer.session(problem, steps))
        histories.append((problem, steps))
    for _ in range(3):
        new = [encodable_steps(scorer, rng, 1)[0] for _ in sessions]
        rewards = scorer.extend(sessions, new)
        for (problem, steps), text, r in zip(histories, new, rewards):
            steps.append(text)
            try:
                want = scorer.score(problem, steps).step_rewards[-1]
            except ValueError:
                continue
            assert abs(r - want) <= ATOL, f"seed {seed}: {steps!r}"
    for s, (problem, steps) in zip(sessions, histories):
        assert_results_close(s.finish(), scorer.score(problem, steps), f"seed {seed}")


def test_extend_checks_its_input(scorers):
    scorer = scorers["step-classifier"]
    s = scorer.session(PROBLEM)
    with pytest.raises(ValueError, match="one step string per session: 1 sessions, 2 texts"):
        scorer.extend([s], ["a", "b"])
    with pytest.raises(ValueError, match="step 0 is empty"):
        s.add_step("  ")
    with pytest.raises(ValueError, match="has no steps to finish"):
        s.finish()
    with pytest.raises(ValueError, match="sessions of this scorer"):
        scorers["value-head"].extend([s], ["a"])
    with pytest.raises(ValueError, match="problem must be a non-empty string"):
        scorer.session("")
    with pytest.raises(ValueError, match="the same session twice"):
        scorer.extend([s, s], ["a", "b"])


def test_onnx_style_scorer_says_sessions_need_torch():
    from edgeprm.backends.base import ScorerBase

    with pytest.raises(NotImplementedError, match="need the torch backend"):
        ScorerBase.session(object.__new__(ScorerBase), PROBLEM)


@pytest.mark.parametrize("family", FAMILIES)
def test_truncation_in_a_session(checkpoints, scorers, family):
    rng, seed = fresh_rng()
    steps = encodable_steps(scorers[family], rng, 12)
    limit = scorers[family].score(PROBLEM, steps[:1]).num_tokens + 25  # a few steps fit, not all
    scorer = edgeprm.load(checkpoints[family], device="cpu", max_length=limit, truncate=True)
    strict = edgeprm.load(checkpoints[family], device="cpu", max_length=limit)
    session = scorer.session(PROBLEM)
    got = [session.add_step(s) for s in steps]
    want = scorer.score(PROBLEM, steps)
    assert want.truncated and got[-1] is None
    for k, r in enumerate(got):
        w = scorer.score(PROBLEM, steps[: k + 1]).step_rewards[-1]
        assert (r is None) == (w is None) and (r is None or abs(r - w) <= ATOL), f"seed {seed}"
    assert session.cached_tokens <= limit and got[0] is not None
    assert_results_close(session.finish(), want, f"seed {seed}")
    s2 = strict.session(PROBLEM)
    with pytest.raises(TooLongError, match=f"over the model's limit of {limit} tokens"):
        for s in steps:
            s2.add_step(s)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_best_of_n_equals_independent_scoring(checkpoints, scorers, family):
    rng, seed = fresh_rng()
    shared = scorers[family]
    alone = edgeprm.load(checkpoints[family], device="cpu", share_prefix=False)
    long_problem = PROBLEM + " " + " ".join(random_step(rng) for _ in range(20))
    cands = [encodable_steps(alone, rng, rng.randint(1, 5)) for _ in range(7)]
    t0 = shared.backbone_tokens
    best_s, res_s = shared.best_of_n(long_problem, cands)
    used_shared = shared.backbone_tokens - t0
    t0 = alone.backbone_tokens
    best_a, res_a = alone.best_of_n(long_problem, cands)
    used_alone = alone.backbone_tokens - t0
    for a, b in zip(res_s, res_a):
        assert_results_close(a, b, f"seed {seed}")
    assert best_s == best_a
    assert used_shared < used_alone, (used_shared, used_alone)
    # mixed batches: several problems, some alone, in input order
    rows = [{"id": str(i), "problem": long_problem if i % 3 else f"other {i}", "steps": c}
            for i, c in enumerate(cands)]
    for a, b in zip(shared.score_batch(rows), alone.score_batch(rows)):
        assert a.id == b.id
        assert_results_close(a, b, f"seed {seed}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_chunked_prefill_equals_one_shot(checkpoints, family, padding_side):
    rng, seed = fresh_rng()
    one_shot = edgeprm.load(checkpoints[family], device="cpu", chunk_tokens=0, share_prefix=False,
                            padding_side=padding_side)
    chunked = edgeprm.load(checkpoints[family], device="cpu", chunk_tokens=rng.randint(3, 17), share_prefix=False,
                           padding_side=padding_side)
    rows = [{"id": str(i), "problem": f"{PROBLEM} {i}", "steps": encodable_steps(one_shot, rng, rng.randint(1, 9))}
            for i in range(5)]
    one_shot.backbone_tokens = 0
    for a, b in zip(chunked.score_batch(rows), one_shot.score_batch(rows)):
        assert_results_close(a, b, f"seed {seed}, chunk {chunked.chunk_tokens}")
    # the cached path stops at the last position a reward reads (a chat template's tail is never run)
    assert 0 < chunked.backbone_tokens <= one_shot.backbone_tokens


def test_chunk_tokens_option():
    with pytest.raises(ValueError, match="chunk_tokens must be a non-negative integer"):
        edgeprm.ScorerConfig(chunk_tokens=-1)
    with pytest.raises(ValueError, match="chunk_tokens=512 is an option of the torch backend"):
        edgeprm.ScorerConfig(backend="onnx", chunk_tokens=512)


def test_value_head_seams_are_recomputed(scorers):
    """Where a value-head step's last token merges with the separator and the next step's text, the session
    crops its cache to the common prefix and recomputes: found here on fresh random steps, rewards still equal."""
    from edgeprm.backends.prefix import common_prefix

    scorer = scorers["value-head"]
    rng, seed = fresh_rng()
    seams = 0
    for _ in range(400):
        steps = encodable_steps(scorer, rng, 4)
        session = scorer.session(PROBLEM)
        for k, step in enumerate(steps):
            before = session._view.ids
            reward = session.add_step(step)
            if common_prefix(before, session._view.ids) < len(before):
                seams += 1
                want = scorer.score(PROBLEM, steps[: k + 1])
                assert abs(reward - want.step_rewards[-1]) <= ATOL, f"seed {seed}: {steps[:k + 1]!r}"
                assert_ids_agree(session)
                assert_results_close(session.finish(), want, f"seed {seed}")
        if seams >= 3:
            break
    assert seams >= 3, f"seed {seed}: no step boundary merged in 400 random trajectories"
