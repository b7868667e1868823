"""Import floors: the longest chain of module imports (module level and in functions) in a package."""
import ast, sys, functools
from pathlib import Path
root = Path(sys.argv[1]); pkg = root / "seq2seq"
mods = {}
for p in pkg.rglob("*.py"):
    parts = p.relative_to(root).with_suffix("").parts
    mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
def imports(name, path):
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                ps = package.split(".")
                base = ".".join(ps[:len(ps) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                t = f"{base}.{a.name}"
                out.add(t if t in mods else base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {t for t in out if t in mods and t != name}
graph = {n: imports(n, p) for n, p in mods.items()}
sys.setrecursionlimit(10000)
@functools.lru_cache(None)
def floor(n):
    return 1 + max((floor(t) for t in graph[n] if t != n), default=0)
print("modules:", len(mods), "import floors:", max(floor(n) for n in mods))
