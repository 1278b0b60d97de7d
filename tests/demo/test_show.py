"""What the demo shows: the bundled examples."""



from edgeprm.demo.show import EXAMPLES, example_rows, read_examples


def test_bundled_examples_are_reproducible_and_labelled():
    rows = read_examples(EXAMPLES)
    assert rows == example_rows()
    assert any(r["is_correct"] for r in rows) and not all(r["is_correct"] for r in rows)
