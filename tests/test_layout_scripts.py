"""scripts/ (user tools) and experiments/ (harnesses behind docs/measurements/) stand on the
package alone: no file there imports from tests/, directly or by putting tests/ on sys.path."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Put on sys.path, tests/ exposes its modules by their bare names (conftest, test_web_page, ...).
TEST_MODULES = {"tests", "conftest"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
PATH_CALLS = {"insert", "append", "extend"}


def names_tests(node: ast.AST) -> bool:
    """Whether a string constant under `node` is, or has as a path component, "tests"."""
    return any(isinstance(c, ast.Constant) and isinstance(c.value, str)
               and "tests" in c.value.replace("\\", "/").split("/") for c in ast.walk(node))


def reaches_into_tests(source: str) -> list[str]:
    """What in `source` reaches into tests/: imports of its modules, sys.path entries naming it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in TEST_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in TEST_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            on_sys_path = (node.func.attr in PATH_CALLS and isinstance(target, ast.Attribute)
                           and target.attr == "path" and isinstance(target.value, ast.Name)
                           and target.value.id == "sys")
            if (on_sys_path or node.func.attr == "addsitedir") and names_tests(node):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, (ast.Assign, ast.AugAssign)):  # sys.path = [...] / sys.path += [...]
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t) == "sys.path" for t in targets) and names_tests(node.value):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_checker_sees_each_way_in():
    # The pattern scripts/export_benchmark.py once had, and the plain forms.
    assert reaches_into_tests('sys.path.insert(0, str(ROOT / "tests"))\nfrom test_web_page import open_page\n')
    assert reaches_into_tests("from tests.conftest import tiny_config_dict\n")
    assert reaches_into_tests("import conftest\n")
    assert reaches_into_tests('sys.path.append("tests")\n')
    assert reaches_into_tests('sys.path += ["../tests"]\n')
    assert not reaches_into_tests('sys.path.insert(0, str(ROOT / "scripts"))\nfrom update_loop import setup\n')
    assert not reaches_into_tests('tests = ["tests/test_cuda.py"]\n')  # naming test files to run is fine


def test_no_script_or_experiment_imports_from_tests():
    files = sorted(p for folder in ("scripts", "experiments") for p in (ROOT / folder).rglob("*.py"))
    assert any(p.parent.name == "scripts" for p in files) and any(p.parent.name == "experiments" for p in files)
    offenders = {str(p.relative_to(ROOT)): found for p in files
                 if (found := reaches_into_tests(p.read_text(encoding="utf-8")))}
    assert offenders == {}, offenders
