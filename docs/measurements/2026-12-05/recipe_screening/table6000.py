"""Validation BLEU (greedy, sacreBLEU cased) of each screening run at every validation, as a
markdown table, and each setting's mean over seeds at the last common validation."""
import json, pathlib, sys
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/work/exp29")
runs, averaged = {}, {}
for d in sorted(root.iterdir()):
    m = d / "metrics.jsonl"
    if d.is_dir() and m.exists():
        rows = [json.loads(line) for line in open(m) if line.strip()]
        runs[d.name] = {r["step"]: r["bleu"] for r in rows if "checkpoint" not in r}
        averaged[d.name] = [(r["step"], r["bleu"], len(r["averaged_from"])) for r in rows if "checkpoint" in r]
steps = sorted({s for r in runs.values() for s in r})
print("| run | " + " | ".join(f"{s:,}" for s in steps) + " | best |")
print("|---|" + "---:|" * (len(steps) + 1))
for name, r in runs.items():
    print(f"| {name} | " + " | ".join(f"{r[s]:.2f}" if s in r else "" for s in steps) + f" | {max(r.values()):.2f} |")
print()
settings = sorted({n.rsplit('_', 1)[0] for n in runs})
for s in settings:
    members = [r for n, r in runs.items() if n.rsplit('_', 1)[0] == s]
    common = sorted(set.intersection(*(set(r) for r in members)))
    last = common[-1]
    tail = [st for st in common if st >= 4000]
    late = [sum(r[st] for r in members) / len(members) for st in tail]
    print(f"{s}: {len(members)} seeds; at update {last:,}: mean {sum(r[last] for r in members) / len(members):.2f}"
          f" ({', '.join(f'{r[last]:.2f}' for r in members)}); mean of best: {sum(max(r.values()) for r in members) / len(members):.2f}"
          + (f"; mean over validations from 4,000 on: {sum(late) / len(late):.2f}" if late else ""))
print()
for name, rows in averaged.items():
    if rows:
        print(f"{name}: averaged.pt " + "; ".join(f"at update {st:,} ({k} checkpoints): {b:.2f}" for st, b, k in rows))
