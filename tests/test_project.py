"""The README's set-up commands are the ones CI and users run."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    cmds = readme_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    main_job, tests = cmds
    assert "pytest" in tests and "pytest" not in main_job
    assert "torch==2.13.0" in main_job and "torch==2.13.0" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_main_job_input_is_shipped():
    main_job = readme_commands()[0]
    for path in re.findall(r"edgeprm/assets/\S+", main_job):
        assert (ROOT / path).is_file(), path


# -- the package's shape -------------------------------------------------------------------------------------------
PACKAGE = ROOT / "edgeprm"


def python_files(*roots: str) -> list[Path]:
    return sorted(p for r in roots for p in (ROOT / r).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """edgeprm modules a file imports anywhere (function-level imports too; `if TYPE_CHECKING:` blocks excepted)."""
    import ast

    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m == "edgeprm" or m.startswith("edgeprm.")}


def node_of(module: str, modules: set[str]) -> str | None:
    """The unit a module belongs to: its folder (edgeprm.backends, ...) or, at the top, the module itself."""
    if module not in modules:
        return None
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def test_no_file_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in python_files("edgeprm", "tests", "bench")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_no_import_cycle_between_folders_of_the_package():
    files = python_files("edgeprm")
    modules = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for p in files:
        src = node_of(module_name(p), modules)
        for target in imports_of(p):
            dst = node_of(target, modules)
            if dst is not None and dst != src:
                graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
            if m not in state:
                visit(m)
        path.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_every_file_and_module_the_docs_name_exists():
    """Paths (under edgeprm/, bench/, tests/) and dotted names (`edgeprm.config.ScorerConfig`, `python -m` targets)
    in docstrings, comments and the READMEs point at something in the tree."""
    import ast
    import io
    import tokenize

    texts: list[tuple[str, str]] = []
    for p in python_files("edgeprm", "tests", "bench"):
        src = p.read_text()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
                texts.append((str(p.relative_to(ROOT)), ast.get_docstring(node)))
        texts += [(str(p.relative_to(ROOT)), t.string) for t in tokenize.generate_tokens(io.StringIO(src).readline)
                  if t.type == tokenize.COMMENT]
    texts += [(str(p.relative_to(ROOT)), p.read_text()) for p in [*ROOT.glob("*.md"), *ROOT.glob("*/**/*.md")]]
    modules = {module_name(p) for p in python_files("edgeprm")}
    bad = []
    for where, text in texts:
        for path in re.findall(r"(?<![\w./-])((?:edgeprm|bench|tests)/[\w./-]*\w)", text):
            if not (ROOT / path).exists():
                bad.append((where, path))
        for dotted in re.findall(r"(?<![\w./-])(edgeprm(?:\.\w+)+)", text):
            parts = dotted.split(".")
            if parts[-1] in FILE_SUFFIXES:  # a file name (edgeprm.json), not a module
                continue
            k = max(i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules or i == 1)
            module = ".".join(parts[:k])
            if module not in modules:
                bad.append((where, dotted))
            elif k < len(parts) and parts[k] not in defined_names(module):
                bad.append((where, dotted))
    assert not bad, bad


FILE_SUFFIXES = {"json", "jsonl", "onnx", "py", "md", "txt", "pt", "png", "html", "safetensors", "data"}


def defined_names(module: str) -> set[str]:
    import ast

    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


# Imported only by the benchmark peers (edgeprm/perf/gguf.py, the `peers` extra): llama-cpp-python compiles llama.cpp
# at install time (minutes), which no test needs.
BENCH_ONLY = ("llama_cpp", "gguf")


def test_what_the_code_imports_is_installed_by_the_readme_commands():
    """Every third-party module the package and the tests import comes with `pip install -e ".[test]"` (a package
    installed by hand hides a missing install step: the tests once needed matplotlib that the extra lacked)."""
    import ast
    import sys
    from importlib.metadata import PackageNotFoundError, packages_distributions, requires

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def norm(name: str) -> str:
        return name.lower().replace("_", "-")

    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    wanted: set[str] = set()
    while todo:  # what those requirements install, transitively (markers evaluated for this machine)
        req = todo.pop()
        if (req.marker is not None and not req.marker.evaluate({"extra": ""})) or norm(req.name) in wanted:
            continue
        wanted.add(norm(req.name))
        try:
            todo += [Requirement(r) for r in requires(req.name) or []]
        except PackageNotFoundError:
            pass
    dists = packages_distributions()
    missing = set()
    for p in python_files("edgeprm", "tests", "bench"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top in ("edgeprm", "tests", *BENCH_ONLY) or top not in dists:
                    continue
                if not {norm(d) for d in dists[top]} & wanted:
                    missing.add((str(p.relative_to(ROOT)), top, tuple(dists[top])))
    assert not missing, sorted(missing)


def test_makefile_targets():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    assert {"test", "lint", "check", "bench", "demo"} <= targets
    demo = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n")[0]
    assert "edgeprm demo" in demo
