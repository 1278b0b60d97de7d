"""QueryTemplate: problems and steps recovered from prompt and response text exactly, clear errors where not."""

import pytest

from edgeprm.rl.template import QueryTemplate, completion_text, message_text
from edgeprm.trajectory import split_steps

PROMPT = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nold question<|im_end|>\n"
          "<|im_start|>assistant\nold answer<|im_end|>\n<|im_start|>user\nWhat is 3 * 4?<|im_end|>\n"
          "<|im_start|>assistant\n")


def test_a_query_splits_at_its_prompt_or_at_the_last_assistant_marker():
    t = QueryTemplate()
    response = "3 * 4 = 12\n\nThe answer is 12.<|im_end|>"
    assert t.split_query(PROMPT + response, PROMPT) == (PROMPT, response)
    assert t.split_query(PROMPT + response) == (PROMPT, response)  # no prompt given: the marker
    assert t.problem_of(PROMPT) == "What is 3 * 4?"  # the last user turn
    assert t.problem_of("  What is 3 * 4?\n") == "What is 3 * 4?"  # plain text: the prompt is the problem
    with pytest.raises(ValueError, match="does not start with its prompt"):
        t.split_query("something else", PROMPT)
    with pytest.raises(ValueError, match="no match of the response marker"):
        t.split_query("plain text with no chat markers")
    with pytest.raises(ValueError, match="came without its prompt and the template has no response_marker"):
        QueryTemplate(response_marker=None).split_query(PROMPT + response)


def test_parse_keeps_every_character_of_each_step_and_strips_end_tokens():
    t = QueryTemplate()
    response = "  7 + 5 = 12\n\n\n\n12 * 2 = 24\n\nThe answer is 24.<|im_end|><|endoftext|>\n<|endoftext|>"
    parsed = t.parse("q", response, id="a")
    text = t.response_text(response)
    assert text == "  7 + 5 = 12\n\n\n\n12 * 2 = 24\n\nThe answer is 24."
    assert parsed.trajectory.steps == split_steps(text) and "\n\n".join(parsed.trajectory.steps) == text
    assert [response[a:b] for a, b in parsed.spans] == list(parsed.trajectory.steps)
    assert parsed.trajectory.response is None and parsed.trajectory.id == "a"
    for empty in ("", "   \n\n ", "<|im_end|>", " <|endoftext|> <|endoftext|>"):
        assert t.parse("q", empty).trajectory is None


def test_think_format_scores_the_thinking_steps_and_the_answer():
    t = QueryTemplate(think=True)
    response = "<think>\n2 + 2 = 4\n\n4 * 3 = 12\n</think>\n\nThe answer is 12.<|im_end|>"
    parsed = t.parse("q", response)
    assert parsed.trajectory.steps == ("2 + 2 = 4", "4 * 3 = 12") and parsed.trajectory.response == "The answer is 12."
    assert [response[a:b] for a, b in parsed.spans] == ["2 + 2 = 4", "4 * 3 = 12", "The answer is 12."]
    cut = t.parse("q", "<think>2 + 2 = 4\n\n4 * 3 =")  # the generation hit its length limit inside the block
    assert cut.trajectory.steps == ("2 + 2 = 4", "4 * 3 =") and cut.trajectory.response is None
    only_answer = t.parse("q", "<think> </think>It is 4.")
    assert only_answer.trajectory.steps == ("It is 4.",)


def test_chat_messages():
    t = QueryTemplate()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is 1 + 1?"}]}]
    assert t.problem_of(messages) == "What is 1 + 1?"
    assert completion_text([{"role": "assistant", "content": "1 + 1 = 2"}]) == "1 + 1 = 2"
    assert completion_text("plain") == "plain" and message_text({"role": "user", "content": "x"}) == "x"
    with pytest.raises(ValueError, match="needs a message with role 'user'"):
        t.problem_of([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="a prompt must be a string or a list of chat messages"):
        t.problem_of(42)


def test_bad_templates_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="problem_pattern must be a regular expression"):
        QueryTemplate(problem_pattern="(unclosed")
    with pytest.raises(ValueError, match="must have a group"):
        QueryTemplate(problem_pattern="user: .*")
    with pytest.raises(ValueError, match="split must be a non-empty string"):
        QueryTemplate(split="")
    with pytest.raises(ValueError, match="strip_tokens must be non-empty strings"):
        QueryTemplate(strip_tokens=("",))
    custom = QueryTemplate(problem_pattern=r"Question: (.*?)\nAnswer:", response_marker=r"Answer:")
    assert custom.parse_query("Question: 2 + 2?\nAnswer: 4").trajectory.problem == "2 + 2?"
