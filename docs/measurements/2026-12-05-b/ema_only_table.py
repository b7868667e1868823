"""Best validation BLEU within N updates (and at each common validation) for base, c2, c4."""
import json, sys
N = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
def curve(name):
    rows = [json.loads(l) for l in open(f"/work/exp29/{name}/metrics.jsonl") if l.strip()]
    return {r["step"]: r["bleu"] for r in rows if "checkpoint" not in r and r["step"] <= N}
sets = {"base": ["base_s1", "base_s2"], "c2 (tie+share+EMA)": ["c2_s1", "c2_s2"], "c4 (EMA only)": ["c4_s1", "c4_s2"]}
curves = {n: curve(n) for ns in sets.values() for n in ns}
last = min(max(c) for c in curves.values())
steps = sorted(s for s in set.intersection(*(set(c) for c in curves.values())) if s <= last)
print("| setting | " + " | ".join(f"{s:,}" for s in steps[-6:]) + f" | best within {last:,} |")
print("|---|" + "---:|" * (len(steps[-6:]) + 1))
for label, ns in sets.items():
    cells = [sum(curves[n][s] for n in ns) / len(ns) for s in steps[-6:]]
    best = [max(v for s, v in curves[n].items() if s <= last) for n in ns]
    print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {sum(best)/len(best):.2f} ({', '.join(f'{b:.2f}' for b in best)}) |")
