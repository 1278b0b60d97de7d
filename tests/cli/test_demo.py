"""`edgeprm demo`: its output, its plot, its errors."""



from edgeprm.cli import main
from edgeprm.demo.show import EXAMPLES, read_examples


def test_demo_command_prints_steps_picks_and_best_of_n(tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert main(["demo", "--problems", "40", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = read_examples(EXAMPLES)
    assert out.count("<- PRM's pick") == len({r["problem_id"] for r in rows})
    assert "first step the PRM doubts" in out
    for word in ("PRM pick", "majority vote", "random pick"):
        assert word in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_a_bad_examples_file(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "steps": ["a"]}\nnot json\n')
    assert main(["demo", "--examples", str(bad), "--problems", "0"]) == 2
    assert "line 2" in capsys.readouterr().err


def test_demo_with_another_model_must_be_a_step_classifier(checkpoints, capsys):
    assert main(["demo", "--model", str(checkpoints["value-head"]), "--problems", "0"]) == 2
    assert "the demo needs a step-classifier PRM" in capsys.readouterr().err
    assert main(["demo", "--model", str(checkpoints["step-classifier"]), "--problems", "0"]) == 0  # any classifier


def test_demo_search_prints_beam_search_against_best_of_n(capsys):
    assert main(["demo", "--problems", "0", "--search", "--search-problems", "4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  ") and "%" in line]
    names = [r.split("  ")[1].strip() for r in rows]
    assert names[:3] == ["beam search 4x4 (sessions)", "beam search 4x4 (re-scoring)", "best-of-16"]
    assert "random pick" in out and "backbone tokens/problem" in out
