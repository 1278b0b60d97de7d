"""Trajectories and their input formats: splitting, R1 parsing, errors naming the row and step."""


import pytest

from edgeprm.trajectory import Trajectory, split_steps


@pytest.mark.parametrize("text", ["a\n\nb", "a\n\n\n\nb", "a\n\nb\n\n", "\n\na\n\nb", "one step only", "x\n\n  \n\ny"])
def test_split_rejoins_to_the_same_text(text):
    steps = split_steps(text)
    assert "\n\n".join(steps) == text
    assert all(s.strip() for s in steps)


def test_split_option_and_r1_parsing():
    t = Trajectory.from_solution("p", "a\nb\nc", split="\n")
    assert t.steps == ("a", "b", "c")
    r1 = Trajectory.from_r1("p", "<think>First I add.\n\nThen I check.</think>\n\nThe answer is 4.")
    assert r1.steps == ("First I add.", "Then I check.") and r1.response == "The answer is 4."
    no_open = Trajectory.from_r1("p", "only thinking\n\nmore</think>")
    assert no_open.steps == ("only thinking", "more") and no_open.response is None
    with pytest.raises(ValueError, match="must contain </think>"):
        Trajectory.from_r1("p", "<think>never closed")
    with pytest.raises(ValueError, match="the <think> block is empty"):
        Trajectory.from_r1("p", "<think> </think>answer")


def test_input_errors_name_the_row_and_step(scorers):
    s = scorers["step-classifier"]
    with pytest.raises(ValueError, match=r"steps must be a non-empty list of strings; got 0 steps for id 'q17'"):
        s.score_batch([{"id": "q17", "problem": "p", "steps": []}])
    with pytest.raises(ValueError, match=r"step 1 is empty for id 'q3'"):
        s.score_batch([{"id": "q3", "problem": "p", "steps": ["ok", "  "]}])
    with pytest.raises(ValueError, match=r"problem must be a non-empty string for id 'q4'"):
        s.score_batch([{"id": "q4", "problem": "", "steps": ["ok"]}])
    with pytest.raises(ValueError, match="neither 'steps' nor 'solution'"):
        s.score_batch([{"id": "q5", "problem": "p"}])
    with pytest.raises(ValueError, match="must be a list of strings, not one string"):
        Trajectory("p", "a single string")
