"""The house rules a machine can check (CONTRIBUTING.md): ruff's lint and format, and the size limits."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"
CODE = [REPO / "med_rlvr_plugin", REPO / "data_prep", REPO / "benchmarks"]
MAX_FUNCTION_LINES, MAX_MODULE_LINES, MAX_EXCEPTIONS = 60, 500, 3
# A function or module over its limit says why on a comment line of its own, inside it (a module's at the
# left margin).
EXCEPTION = "# size-limit exception:"


@pytest.mark.parametrize("check", [["check", "--output-format=concise"], ["format", "--check", "--diff"]])
def test_ruff(check: list[str]) -> None:
    """ruff.toml's rules (pyflakes, pycodestyle, bugbear, import order, complexity 15) and its format."""
    result = subprocess.run([str(RUFF), *check, str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def oversized() -> tuple[list[str], list[str]]:
    """(over the limit without a reason, exceptions with their reasons), as `path:line name: N lines`."""
    over, excused = [], []
    for path in sorted(file for folder in CODE for file in folder.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        spans = [(path.name, 1, len(lines), MAX_MODULE_LINES)]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                spans.append((f"{node.name}()", node.lineno, node.end_lineno, MAX_FUNCTION_LINES))
        for name, first, last, limit in spans:
            if last - first + 1 <= limit:
                continue
            where = f"{path.relative_to(REPO)}:{first} {name}: {last - first + 1} lines"
            # A module's reason stands at the left margin; a function's is indented inside its body.
            inside = lines[first - 1 : last]
            reasons = [
                line.strip()
                for line in inside
                if line.lstrip().startswith(EXCEPTION) and (line[0] == "#") == (limit == MAX_MODULE_LINES)
            ]
            (excused if reasons else over).append(where + (f" ({reasons[0]})" if reasons else ""))
    return over, excused


def test_functions_and_modules_stay_within_the_size_limits() -> None:
    over, excused = oversized()
    assert not over, f"over {MAX_FUNCTION_LINES} lines a function or {MAX_MODULE_LINES} a module: {over}"
    assert len(excused) <= MAX_EXCEPTIONS, f"at most {MAX_EXCEPTIONS} named exceptions: {excused}"


def test_every_module_opens_with_a_docstring_naming_its_concern() -> None:
    missing = [
        str(path.relative_to(REPO))
        for folder in CODE
        for path in sorted(folder.rglob("*.py"))
        if not (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()
    ]
    assert not missing, missing


@pytest.mark.integration
def test_the_inner_loop_command_of_docs_development_md_leaves_out_exactly_the_slow_tests() -> None:
    """`pytest -m "not integration and not ray"`, as docs/development.md gives it, collected for real."""
    counts = {}
    for marks in ("not integration and not ray", "integration or ray"):
        command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", marks]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        counts[marks] = int(re.search(r"(\d+)/(\d+) tests collected", result.stdout)[1])
        total = int(re.search(r"(\d+)/(\d+) tests collected", result.stdout)[2])
    assert counts["not integration and not ray"] + counts["integration or ray"] == total
    assert min(counts.values()) > 0
