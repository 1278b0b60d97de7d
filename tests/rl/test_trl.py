"""PRMReward in TRL's calling convention: direct calls in both formats, and a real GRPOTrainer step on CPU with a tiny
policy and the bundled demo PRM as the reward."""

import math

import pytest

from edgeprm.aggregation import aggregate
from edgeprm.rl import PRMReward
from edgeprm.trajectory import Trajectory

PROBLEMS = ["Jade has 82 marbles. She wins 50 marbles in a game. She sells 5 jars of 12 marbles each. How many now?",
            "Tom has 37 apples. He buys 5 bags of 12 apples each, then gives away 19. How many apples does he have?"]
COMPLETIONS = [" 82 + 50 = 132\n\n5 * 12 = 60\n\nThen she has 132 - 60 = 72 marbles.",
               "5 * 12 = 60\n\n37 + 60 = 97\n\n97 - 19 = 78\n\nThe answer is 78.",
               "82 + 50 = 132\n\n5 * 12 = 60\n\nThen she has 132 - 60 = 69 marbles.", "   ",
               "5 * 12 = 60\n\n37 + 60 = 98\n\n98 - 19 = 79\n\nThe answer is 79."]
OWNER = [0, 1, 0, 0, 1]  # the problem of each completion


def direct(demo, problem: str, completion: str) -> float | None:
    if not completion.strip():
        return None
    return demo.score_batch([Trajectory.from_solution(problem, completion)])[0].score


def test_plain_and_conversational_formats_score_as_direct_scoring(demo):
    reward = PRMReward(demo)
    want = [direct(demo, PROBLEMS[o], c) for o, c in zip(OWNER, COMPLETIONS)]
    plain = reward(prompts=[PROBLEMS[o] for o in OWNER], completions=COMPLETIONS, completion_ids=[[1]] * 5)
    chat = reward(prompts=[[{"role": "system", "content": "Reason step by step."},
                            {"role": "user", "content": PROBLEMS[o]}] for o in OWNER],
                  completions=[[{"role": "assistant", "content": c}] for c in COMPLETIONS])
    templated = reward(prompts=[f"<|im_start|>user\n{PROBLEMS[o]}<|im_end|>\n<|im_start|>assistant\n" for o in OWNER],
                       completions=[c + "<|im_end|>" for c in COMPLETIONS])
    for got in (plain, chat, templated):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g == 0.0 if w is None else abs(g - w) <= 1e-6
    assert plain[1] > plain[4] and plain[0] > plain[2]  # the wrong sums score lower


def test_aggregation_option_and_logging(demo):
    logged = {}
    results = demo.score_batch([Trajectory.from_solution(PROBLEMS[o], c) if c.strip() else
                                Trajectory(PROBLEMS[o], ["placeholder"]) for o, c in zip(OWNER, COMPLETIONS)])
    for agg in ("mean", "last", "prod", "reasonflux"):
        reward = PRMReward(demo, aggregation=agg, alpha=0.5, name="prm_" + agg)
        got = reward([PROBLEMS[o] for o in OWNER], COMPLETIONS, log_metric=lambda k, v: logged.__setitem__(k, v))
        for g, c, r in zip(got, COMPLETIONS, results):
            want = aggregate([r.step_rewards], [r.trajectory_reward], agg, 0.5)[0]
            assert g == 0.0 if not c.strip() else abs(g - want) <= 1e-6
    assert logged["prm_mean/empty_frac"] == pytest.approx(0.2)
    assert logged["prm_mean/steps"] == pytest.approx((3 + 4 + 3 + 4) / 4)
    assert PRMReward(demo, empty_reward=None)(PROBLEMS[:1], [""]) == [None]  # TRL: None = not applicable


def test_problem_column_and_errors(demo):
    reward = PRMReward(demo, problem_column="question")
    got = reward(prompts=["<some rendered prompt>"] * 2, completions=COMPLETIONS[:2], question=PROBLEMS)
    assert abs(got[1] - direct(demo, PROBLEMS[1], COMPLETIONS[1])) <= 1e-6
    with pytest.raises(ValueError, match="problem_column='question': the trainer passed no such column"):
        reward(prompts=["p"], completions=["c"], answer=["4"])
    with pytest.raises(ValueError, match="got 2 prompts for 1 completions"):
        PRMReward(demo)(prompts=["a", "b"], completions=["c"])
    with pytest.raises(ValueError, match="aggregation must be one of"):
        PRMReward(demo, aggregation="median")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A 1-layer Qwen2 causal LM (random weights) with a locally trained tokenizer that has a chat template."""
    torch = pytest.importorskip("torch")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from edgeprm.testing import build_tokenizer, tiny_qwen2_config

    tok = build_tokenizer(tmp_path_factory.mktemp("policy"), seed=11)
    config = tiny_qwen2_config(len(tok), hidden_size=32, num_layers=1, intermediate_size=64)
    config.pop("architectures")
    config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**config)), tok


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_a_real_grpo_step_trains_on_the_prm_reward(demo, tiny_policy, tmp_path, conversational):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    policy, tok = tiny_policy
    calls = []

    class Recorded(PRMReward):
        def __call__(self, prompts, completions, **kwargs):
            out = super().__call__(prompts, completions, **kwargs)
            calls.append((prompts, completions, out))
            return out

    prompts = [[{"role": "user", "content": p}] for p in PROBLEMS] if conversational else PROBLEMS
    data = Dataset.from_dict({"prompt": prompts * 2})
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=24, max_steps=1, learning_rate=1e-2, report_to="none", use_cpu=True,
                      logging_steps=1, save_strategy="no", bf16=False, seed=0)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer = GRPOTrainer(model=policy, reward_funcs=Recorded(demo), args=args, train_dataset=data,
                          processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1 and len(calls) == 1
    got_prompts, completions, rewards = calls[0]
    assert len(completions) == len(rewards) == 4 and all(isinstance(r, float) for r in rewards)
    for p, c, r in zip(got_prompts, completions, rewards):
        problem = p[-1]["content"] if conversational else p
        text = c[0]["content"] if conversational else c
        want = direct(demo, problem, text)
        assert r == 0.0 if want is None else abs(r - want) <= 1e-6
    logged = trainer.state.log_history[0]
    assert math.isclose(logged["rewards/prm/mean"], sum(rewards) / len(rewards), rel_tol=1e-5)
    assert "prm/steps" in logged
    assert any(not (p.detach() == before[n]).all() for n, p in policy.named_parameters())  # the step updated it
