"""edgeprm against each family's reference recipe, computed independently with transformers' own loaders:
full-sequence forward, head on every token, softmax/sigmoid, then the positions picked the way the recipe does."""

import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen2ForCausalLM, Qwen2Model

import edgeprm
from edgeprm.testing import build_step_classifier

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


ATOL = 1e-5


def random_steps(rng: random.Random, n: int, end_alnum: bool = False) -> list[str]:
    words = "we add the numbers then multiply so total is left each box has apples".split()
    steps = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        s = f"{' '.join(rng.choices(words, k=rng.randint(2, 6)))} {a} + {b} = {a + b}"
        steps.append(s if end_alnum else s + rng.choice([".", "!", ";", ""]))
    return steps


def classifier_reference(path, problem, steps):
    tok = AutoTokenizer.from_pretrained(path)
    backbone = Qwen2Model.from_pretrained(path, dtype=torch.float32).eval()
    sd = load_file(f"{path}/model.safetensors")
    h = backbone.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))
    head.load_state_dict({k[len("score."):]: v for k, v in sd.items() if k.startswith("score.")})
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": problem},
                {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = tok.encode(text, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(head(backbone(input_ids=ids).last_hidden_state), dim=-1)
    mask = ids[0] == tok.convert_tokens_to_ids("<extra_0>")
    return probs[0][mask][:, 1].tolist()


@pytest.mark.parametrize("n_steps", [1, 3, 7])
def test_step_classifier_matches_reference(checkpoints, scorers, n_steps):
    rng = random.Random()
    problem = f"Tom has {rng.randint(2, 50)} apples. How many now?"
    steps = random_steps(rng, n_steps)
    ref = classifier_reference(checkpoints["step-classifier"], problem, steps)
    r = scorers["step-classifier"].score(problem, steps)
    assert len(r.step_rewards) == n_steps
    torch.testing.assert_close(torch.tensor(r.step_rewards), torch.tensor(ref), atol=ATOL, rtol=0)
    assert r.trajectory_reward == pytest.approx(ref[-1], abs=ATOL)
    assert r.score == pytest.approx(min(ref), abs=ATOL)


def test_underflow_to_zero_still_one_reward_per_step(tmp_path):
    """score.2's bias makes the positive probability exactly 0.0 in fp32: a `probs != 0` filter would misalign."""
    path = build_step_classifier(tmp_path / "m", seed=5, head_bias=(0.0, -300.0))
    steps = random_steps(random.Random(), 5)
    ref = classifier_reference(path, "What is 2 + 2?", steps)
    assert ref == [0.0] * 5
    r = edgeprm.load(path, device="cpu").score("What is 2 + 2?", steps)
    assert r.step_rewards == [0.0] * 5


def test_value_head_matches_reference(checkpoints, scorers):
    path = checkpoints["value-head"]
    tok = AutoTokenizer.from_pretrained(path)
    lm = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    sd = torch.load(f"{path}/reward_head.pt", weights_only=True)
    head = torch.nn.Linear(lm.config.hidden_size, 1)
    head.load_state_dict(sd)

    def reference(texts):  # the value-head recipe on a right-padded batch: h at attention_mask.sum(1) - 1
        enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=2048)
        with torch.no_grad():
            hs = lm(**enc, output_hidden_states=True).hidden_states[-1]
        last = enc["attention_mask"].sum(1) - 1
        return torch.sigmoid(head(hs[torch.arange(len(texts)), last])).squeeze(-1).tolist()

    rng = random.Random()
    problem = "A farmer has 12 cows and buys 7 more."
    steps = random_steps(rng, 4, end_alnum=True)  # no punctuation: a prefix tokenizes as the full text's prefix
    r = scorers["value-head"].score(problem, steps)
    full = reference([problem + "\n\n".join(steps)])[0]
    assert r.trajectory_reward == pytest.approx(full, abs=ATOL)
    prefixes = reference([problem + "\n\n".join(steps[: i + 1]) for i in range(len(steps))])
    torch.testing.assert_close(torch.tensor(r.step_rewards), torch.tensor(prefixes), atol=ATOL, rtol=0)
    assert r.score == pytest.approx(sum(prefixes) / len(prefixes) + full, abs=2 * ATOL)
    # A solution string split on blank lines and re-joined scores exactly as the unsplit text.
    solution = "\n\n".join(random_steps(rng, 3))
    r2 = scorers["value-head"].score(problem, solution)
    assert r2.trajectory_reward == pytest.approx(reference([problem + solution])[0], abs=ATOL)


def test_token_prob_matches_reference(checkpoints, scorers):
    path = checkpoints["token-prob"]
    tok = AutoTokenizer.from_pretrained(path)
    lm = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    good, bad = tok.encode("+", add_special_tokens=False)[0], tok.encode("-", add_special_tokens=False)[0]
    tag_id = tok.encode(" ки", add_special_tokens=False)[0]
    problem = "Sam reads 14 pages a day for 3 days."
    steps = random_steps(random.Random(), 5)
    ids = tok.encode(f"{problem} " + "\n".join(s + " ки" for s in steps), return_tensors="pt")
    with torch.no_grad():
        logits = lm(ids).logits  # [1, T, V]: the full-vocabulary tensor edgeprm avoids
    scores = logits[:, :, [good, bad]].softmax(dim=-1)[:, :, 0]
    ref = scores[ids == tag_id].tolist()
    r = scorers["token-prob"].score(problem, steps)
    assert len(ref) == len(steps)
    torch.testing.assert_close(torch.tensor(r.step_rewards), torch.tensor(ref), atol=ATOL, rtol=0)
