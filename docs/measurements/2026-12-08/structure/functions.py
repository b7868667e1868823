import ast, sys, pathlib
BLOCKS = (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith)
def depth(node, d=0):
    """Block nesting as the eye sees it: an `elif` is as deep as its `if`."""
    m = d
    elifs = set()
    if isinstance(node, ast.If) and len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
        elifs.add(id(node.orelse[0]))
    for c in ast.iter_child_nodes(node):
        if id(c) in elifs:
            m = max(m, depth(c, d))
            continue
        nd = d + 1 if isinstance(c, BLOCKS) else d
        m = max(m, depth(c, nd))
    return m
root = pathlib.Path(sys.argv[1])
longest = []
for f in sorted(root.rglob('*.py')):
    tree = ast.parse(f.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            longest.append((node.end_lineno - node.lineno + 1, f"{f}:{node.name}", depth(node)))
longest.sort(reverse=True)
for n, name, d in longest[:8]: print(n, name, "depth", d)
for n, name, d in longest:
    if name.endswith(':fit'): print("fit:", n, "lines, depth", d, name)
mods = [(len(f.read_text().splitlines()), str(f)) for f in root.rglob('*.py')]
mods.sort(reverse=True); print("longest modules:", mods[:5])
print("modules directly in package:", len(list(root.glob('*.py'))))
