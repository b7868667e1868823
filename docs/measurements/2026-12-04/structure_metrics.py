"""Structure figures of a checkout's package (issue #25's before/after table).

python docs/measurements/2026-12-04/structure_metrics.py CHECKOUT
"""
import ast
import re
import sys
from pathlib import Path

root = Path(sys.argv[1]) / "seq2seq"
modules = sorted(p for p in root.rglob("*.py"))
name = lambda p: str(p.relative_to(root))[:-3].replace("/", ".")  # noqa: E731

sizes = {name(m): len(m.read_text().splitlines()) for m in modules}
functions, whole_config = [], []
for m in modules:
    tree = ast.parse(m.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append((node.end_lineno - node.lineno + 1, f"{name(m)}.{node.name}"))
            args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
            if any(a.annotation is not None and ast.unparse(a.annotation) == "Config" for a in args):
                whole_config.append(f"{name(m)}.{node.name}")
functions.sort(reverse=True)

# Modules other than rundir.py that spell a file name of a run directory: a string literal that
# is exactly such a name (or builds best.stepN.pt), docstrings left out.
RUN_FILES = {"last.pt", "best.pt", "averaged.pt", "train.log", "train.jsonl", "metrics.jsonl", "finetune.json",
             "prepared", "plots", "tensorboard", "config.yaml", "valid.best.hyp", "runs"}
naming = {}
for m in modules:
    if m.name == "rundir.py":
        continue
    tree = ast.parse(m.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    hits = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings and (n.value in RUN_FILES or n.value.startswith("best.step"))]
    if hits:
        naming[name(m)] = sorted(set(hits))

print(f"modules: {len(modules)}, lines: {sum(sizes.values())}, largest: "
      + ", ".join(f"{k} {v}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:5]))
print("longest functions:", ", ".join(f"{n} {k}" for k, n in [(f, n) for n, f in functions[:6]]))
print(f"functions over 60 lines: {sum(1 for n, _ in functions if n > 60)}")
print(f"functions taking the whole Config: {len(whole_config)} in "
      f"{len({f.rsplit('.', 1)[0] for f in whole_config})} modules: {', '.join(whole_config)}")
print(f"modules that build run-directory paths themselves: {len(naming)} {naming}")
