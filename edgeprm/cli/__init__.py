"""The `edgeprm` command: one module per subcommand, imported only when that subcommand runs.

    edgeprm demo | score | select | report | export | quantize | parity | eval | bench | serve  [--help]

Each subcommand module has `add_arguments(parser)` and `run(args) -> exit code`. `main` reads the subcommand's
name from the arguments and imports that one module, so `edgeprm score --backend onnx` imports no more than the
ONNX path needs (no torch, no transformers) and `edgeprm --help` imports none of them. Errors in the user's input
(ValueError, FileNotFoundError) print as one `edgeprm: error: ...` line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name: (module, one-line help). The order is the order `edgeprm --help` lists them in.
COMMANDS = {
    "demo": ("edgeprm.cli.demo", "show the bundled demo PRM finding wrong steps and picking answers"),
    "score": ("edgeprm.cli.score", "score a JSONL file of trajectories"),
    "export": ("edgeprm.cli.export", "export a PRM to a self-contained ONNX bundle (fp32, int8 or int4)"),
    "quantize": ("edgeprm.cli.quantize", "write an 8-bit or 4-bit checkpoint of a PRM"),
    "parity": ("edgeprm.cli.parity", "compare score files with a full-precision reference"),
    "eval": ("edgeprm.cli.eval", "ProcessBench and Best-of-N figures, and a fidelity gate for small variants"),
    "bench": ("edgeprm.cli.bench", "measure every backend and quantization this machine has on a model"),
    "serve": ("edgeprm.cli.serve", "serve a PRM over HTTP with dynamic batching (scores, OpenRLHF rewards, metrics)"),
    "select": ("edgeprm.cli.select", "keep the best trajectories of a file (top-k per group, top-fraction, threshold)"),
    "report": ("edgeprm.cli.report", "an offline HTML report of a scored file (score distributions, step curves)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s arguments are defined (its module imported), the others are listed."""
    parser = argparse.ArgumentParser(prog="edgeprm", description="Process-reward-model scoring on small hardware.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"edgeprm: error: {e}", file=sys.stderr)
        return 2
