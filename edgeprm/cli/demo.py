"""`edgeprm demo`: the bundled demo PRM finding wrong steps and picking answers (`edgeprm.demo.show`)."""

from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from edgeprm.demo.show import run_demo

    run_demo(args.model, Path(args.examples), args.problems, args.candidates, args.seed, args.device,
             Path(args.plot) if args.plot else None, args.search_problems if args.search else 0)
    return 0


def add_arguments(p) -> None:
    from edgeprm.demo.show import EXAMPLES

    p.description = ("Scores the bundled example solutions and prints every step with its reward, the first step the "
                     "model doubts and the candidate it picks; then Best-of-N on held-out synthetic problems against "
                     "random pick and majority vote.")
    p.add_argument("--model", default=None, help="a step-classifier checkpoint (default: the bundled demo PRM)")
    p.add_argument("--examples", default=str(EXAMPLES), help="JSONL of example candidate solutions to show")
    p.add_argument("--problems", type=int, default=500, help="held-out problems for Best-of-N (0 = skip)")
    p.add_argument("--candidates", type=int, default=4, help="candidate solutions per held-out problem")
    p.add_argument("--seed", type=int, default=None, help="held-out data seed (default: the evaluation seed)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--search", action="store_true",
                   help="also run step-level beam search (KV-cached sessions) against Best-of-N at equal PRM budget")
    p.add_argument("--search-problems", type=int, default=100, help="held-out problems for --search")
    p.add_argument("--plot", metavar="FILE.png", default=None, help="also draw step-reward curves of the examples")
