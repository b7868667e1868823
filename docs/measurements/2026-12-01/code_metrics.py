import ast, sys, re
from pathlib import Path
root = Path(sys.argv[1]) / "seq2seq"
mods = sorted(root.glob("*.py"))
print("lines per module:", {m.stem: len(m.read_text().splitlines()) for m in mods})
print("total:", sum(len(m.read_text().splitlines()) for m in mods))
longest = []
for m in mods:
    tree = ast.parse(m.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            longest.append((node.end_lineno - node.lineno + 1, f"{m.stem}.{node.name}"))
longest.sort(reverse=True)
print("longest functions:", longest[:4])
# import graph (module-level and function-level relative imports)
graph = {}
for m in mods:
    deps = set()
    for node in ast.walk(ast.parse(m.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module: deps.add(node.module.split(".")[0])
            else: deps.update(a.name for a in node.names)
    graph[m.stem] = deps
cycles = set()
def dfs(start, node, path):
    for d in graph.get(node, ()):
        if d == start: cycles.add(tuple(sorted(path)))
        elif d not in path and d in graph: dfs(start, d, path + [d])
for m in graph: dfs(m, m, [m])
print("import cycles:", sorted(cycles))
print("config.py imports:", sorted(graph["config"]))
