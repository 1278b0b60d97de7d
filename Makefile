.PHONY: test bench lint demo

test:
	python -m pytest

bench:
	python bench/bench_step_head.py --quick

lint:
	ruff check edgeprm tests bench

demo:
	edgeprm score edgeprm/assets/examples.jsonl -o scored.jsonl
