"""The package's shape (issue #38): short functions and modules, few modules directly in
seq2seq/, a docstring on every wing, and imports that point down the wings and never go round
in a loop. Read from the source with ast; nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "seq2seq"

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_TOP_MODULES = 8

# The wings from low to high: a module may import its own wing and the wings below it. Wings
# that share a place (a tuple) may not import each other, except at the top: the command, the
# package's API and `python -m seq2seq`.
WINGS = ["errors", "config", "data", "model", "run", "decoding", ("training", "deploy"),
         ("cli", "__init__", "__main__")]
# Any wing may import these; they import nothing of seq2seq but the errors.
LEAVES = ("metrics", "profiling")

PLACE = {wing: place for place, names in enumerate(WINGS)
         for wing in ((names,) if isinstance(names, str) else names)}
TOP = len(WINGS) - 1


def python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in python_files()}


def where(path: Path, line: int | None = None) -> str:
    name = str(path.relative_to(ROOT))
    return f"{name}:{line}" if line is not None else name


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported(module: str, path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) for every import of a seq2seq module in `path`, at any depth (inside
    functions too), relative ones resolved; `from P import n` counts as P.n when that is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            found += [(node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
                      for alias in node.names]
    return [(line, target) for line, target in found if target == "seq2seq" or target.startswith("seq2seq.")]


def import_graph() -> tuple[dict[str, list[tuple[int, str]]], dict[str, Path]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}, known


def may_import(importer: str, target: str) -> bool:
    if importer == target:
        return True
    if importer in LEAVES:
        return target == "errors"
    if target in LEAVES:
        return True
    return PLACE[target] < PLACE[importer] or PLACE[importer] == TOP


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{where(path, node.lineno)} {node.name}: {length} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_no_module_is_longer_than_the_limit():
    long = [f"{where(p)}: {n} lines" for p in python_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_few_modules_stand_directly_in_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in seq2seq/ (at most {MAX_TOP_MODULES}): {top}"


def test_every_wing_says_what_it_owns():
    folders = sorted({p.parent for p in python_files()} - {PACKAGE})
    missing = [where(folder) + "/__init__.py" for folder in folders if not (folder / "__init__.py").is_file()]
    undocumented = [where(folder / "__init__.py") for folder in folders if (folder / "__init__.py").is_file()
                    and not ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))]
    assert not missing and not undocumented, f"no __init__.py: {missing}; __init__.py without a docstring: {undocumented}"


def test_every_module_is_in_a_wing():
    unplaced = sorted({wing(name) for name in modules()} - set(PLACE) - set(LEAVES))
    assert not unplaced, f"not in WINGS or LEAVES (add them where they belong): {unplaced}"


def test_imports_point_down_the_wings():
    graph, known = import_graph()
    placed = set(PLACE) | set(LEAVES)  # a module in no wing fails test_every_module_is_in_a_wing
    wrong = []
    for name, targets in graph.items():
        for line, target in targets:
            if target not in known:
                wrong.append(f"{where(known[name], line)}: imports {target}, which does not exist")
            elif {wing(name), wing(target)} <= placed and not may_import(wing(name), wing(target)):
                wrong.append(f"{where(known[name], line)}: {name} ({wing(name)}) imports {target} ({wing(target)})")
    assert not wrong, f"imports against the order {WINGS} (leaves {LEAVES}):\n" + "\n".join(sorted(set(wrong)))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per strongly connected
    component of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [shortest_cycle(edges, component) for component in components]


def shortest_cycle(edges: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for other in sorted(edges[path[-1]] & component):
            if other == start:
                return path + [start]
            if other not in seen:
                seen.add(other)
                paths.append(path + [other])
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_no_import_cycles():
    graph, known = import_graph()
    edges = {name: {target for _, target in targets if target in known and target != name}
             for name, targets in graph.items()}
    found = cycles(edges)
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checks_catch_what_they_look_for(tmp_path):
    # A check that passes must be one that can fail: each tried on a small case.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert may_import("decoding", "run") and not may_import("run", "decoding")
    assert not may_import("training", "deploy") and not may_import("deploy", "training")
    assert may_import("cli", "training") and may_import("data", "metrics") and not may_import("metrics", "data")
    assert not may_import("errors", "config") and may_import("config", "errors")
    known = {"seq2seq.data": Path(), "seq2seq.data.text": Path(), "seq2seq.run.rundir": Path()}
    source = tmp_path / "encode.py"  # read as seq2seq/data/encode.py
    source.write_text("from . import text\nfrom .text import x\nfrom ..run.rundir import RunDir\nimport os\n"
                      "def f():\n    from seq2seq.run import rundir\n", encoding="utf-8")
    assert imported("seq2seq.data.encode", source, known) == [
        (1, "seq2seq.data.text"), (2, "seq2seq.data.text"), (3, "seq2seq.run.rundir"), (6, "seq2seq.run.rundir")]
