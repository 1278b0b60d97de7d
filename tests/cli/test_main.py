"""The `edgeprm` command: subcommands imported only when they run, errors as one line with exit code 2."""

import subprocess
import sys

import pytest

from edgeprm.cli import COMMANDS, main

PROBE = r"""
import sys
from edgeprm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(sorted(m for m in sys.modules
             if m.startswith("edgeprm.cli.") or m.partition(".")[0] in ("torch", "transformers")))
"""


def imported(*argv: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return eval(proc.stdout.strip().splitlines()[-1])


def test_help_lists_every_command_and_imports_none():
    assert imported("--help") == []
    proc = subprocess.run([sys.executable, "-m", "edgeprm.cli", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and all(name in proc.stdout for name in COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_subcommand_imports_only_its_own_module(command):
    mods = {m for m in imported(command, "--help") if m.startswith("edgeprm.cli.")}
    others = {module for name, (module, _) in COMMANDS.items() if name != command}
    assert COMMANDS[command][0] in mods and not mods & others, mods


def test_score_and_parity_parse_without_torch():
    assert [m for m in imported("score", "--help") if not m.startswith("edgeprm.")] == []
    assert [m for m in imported("parity", "--help") if not m.startswith("edgeprm.")] == []


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["score", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--backend", "onnx",
                 "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgeprm: error: ") and "edgeprm export" in err[0]
    with pytest.raises(SystemExit):
        main(["frobnicate"])
