.PHONY: test bench lint check demo

test:
	python -m pytest

bench:
	python bench/bench_step_head.py --quick

lint:
	ruff check edgeprm tests bench

check: lint test

demo:
	edgeprm demo
