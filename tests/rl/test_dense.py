"""Dense token rewards in the policy's token space, on two different policy tokenizers (a byte-level BPE like Qwen's
and a SentencePiece-like Metaspace unigram), from the text (offsets) and from the policy's own ids (decoding)."""

import random

import numpy as np
import pytest

from edgeprm.demo.synthetic import generate
from edgeprm.rl import QueryTemplate, token_rewards, token_rewards_batch
from edgeprm.trajectory import Trajectory


def _corpus(seed: int) -> list[str]:
    return ["\n\n".join(r["steps"]) + "\n" + r["problem"] for r in generate(60, candidates=1, seed=seed)]


def byte_level_bpe(path):
    from edgeprm.testing import build_tokenizer

    return build_tokenizer(path, vocab_size=900, seed=3, corpus=_corpus(1))


def metaspace_unigram(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(_corpus(2), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module", params=[byte_level_bpe, metaspace_unigram], ids=["byte-level-bpe", "metaspace"])
def policy_tokenizer(request, tmp_path_factory):
    return request.param(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def responses(policy_tokenizer):
    """(problem, response) pairs of fresh synthetic solutions, each response as the policy would decode it."""
    out = []
    for r in generate(4, candidates=2, seed=random.randrange(10**6)):
        text = "\n\n".join(r["steps"])
        ids = policy_tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append((r["problem"], policy_tokenizer.decode(ids), ids))
    return out


def _step_ends(response: str) -> list[int]:
    return [b for _, b in QueryTemplate().parse("q", response).spans]


def test_each_step_reward_lands_on_the_token_holding_its_last_character(policy_tokenizer, responses, demo):
    problems = [p for p, _, _ in responses]
    texts = [t for _, t, _ in responses]
    arrays = token_rewards_batch(policy_tokenizer, problems, texts, demo)
    results = demo.score_batch([Trajectory.from_solution(p, t) for p, t in zip(problems, texts)])
    for (problem, text, ids), arr, result in zip(responses, arrays, results):
        offsets = policy_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert arr.dtype == np.float32 and arr.shape == (len(offsets),)
        where = [next(t for t in range(len(offsets) - 1, -1, -1) if offsets[t][0] <= e - 1 < offsets[t][1])
                 for e in _step_ends(text)]  # the token containing the step's last character
        assert sorted(set(where)) == list(np.flatnonzero(arr))
        placed = np.zeros_like(arr)
        np.add.at(placed, where, np.array(result.step_rewards, dtype=np.float32))
        assert np.abs(arr - placed).max() <= 1e-6 and abs(arr.sum() - sum(result.step_rewards)) <= 1e-5
        # from the policy's ids (decoding) the same tokens carry the same rewards; this one response is scored alone,
        # the batch above with its problem's shared prompt computed once: fp32 agreement to 1e-5, as for sessions
        from_ids = token_rewards(policy_tokenizer, problem, text, demo, response_ids=ids)
        assert np.array_equal(from_ids != 0, arr != 0) and np.abs(from_ids - arr).max() <= 1e-5


def _first_covering(tok, ids, text, end):
    return next(k for k in range(1, len(ids) + 1) if tok.decode(ids[:k]).startswith(text[:end])) - 1


def test_the_policys_own_ids_need_not_be_the_canonical_encoding(demo, tmp_path):
    tok = byte_level_bpe(tmp_path)
    rng = random.Random()
    for r in generate(3, candidates=1, seed=rng.randrange(10**6)):
        text = "\n\n".join(r["steps"])
        cuts = sorted(rng.sample(range(1, len(text)), 12))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        ids = [i for piece in pieces for i in tok(piece, add_special_tokens=False)["input_ids"]]
        assert tok.decode(ids) == text and ids != tok(text, add_special_tokens=False)["input_ids"]
        arr = token_rewards(tok, r["problem"], text, demo, response_ids=ids)
        assert arr.shape == (len(ids),)
        steps = demo.score(r["problem"], text).step_rewards
        for end, reward in zip(_step_ends(text), steps):
            assert abs(arr[_first_covering(tok, ids, text, end)] - reward) <= 1e-6
        assert abs(arr.sum() - sum(steps)) <= 1e-5


def test_think_responses_chat_prompts_and_empty_responses(demo, tmp_path):
    tok = byte_level_bpe(tmp_path)
    prompt = [{"role": "user", "content": "Jade has 82 marbles. She wins 50 marbles in a game. How many now?"}]
    response = "<think>82 + 50 = 132\n\nSo she has 132.</think>The answer is 132.<|im_end|>"
    arr = token_rewards(tok, prompt, response, demo, template=QueryTemplate(think=True))
    r = demo.score_batch([Trajectory(prompt[0]["content"], ["82 + 50 = 132", "So she has 132."],
                                     "The answer is 132.")])[0]
    assert arr.shape == (len(tok(response, add_special_tokens=False)["input_ids"]),)
    nonzero = arr[np.flatnonzero(arr)]
    assert np.abs(nonzero - np.array([*r.step_rewards, r.trajectory_reward], dtype=np.float32)).max() <= 1e-6
    empty = token_rewards(tok, prompt, "  ", demo)
    assert empty.shape == (len(tok("  ", add_special_tokens=False)["input_ids"]),) and not empty.any()
    with pytest.raises(ValueError, match="not the decoding of response_ids"):
        token_rewards(tok, prompt, "82 + 50 = 132", demo, response_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="one prompt"):
        token_rewards_batch(tok, ["a", "b"], ["x"], demo)
