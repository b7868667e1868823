"""Validation BLEU (greedy, sacreBLEU cased) of the runs named on the command line from update
FROM to TO, as a markdown table: python tail_table.py FROM TO RUN_DIR..."""
import json, pathlib, sys
start, end, dirs = int(sys.argv[1]), int(sys.argv[2]), [pathlib.Path(d) for d in sys.argv[3:]]
runs = {}
for d in dirs:
    rows = [json.loads(line) for line in open(d / "metrics.jsonl") if line.strip()]
    runs[d.name] = {r["step"]: r["bleu"] for r in rows if "checkpoint" not in r and start <= r["step"] <= end}
steps = sorted({s for r in runs.values() for s in r})
print("| run | " + " | ".join(f"{s:,}" for s in steps) + " | best |")
print("|---|" + "---:|" * (len(steps) + 1))
for name, r in runs.items():
    print(f"| {name} | " + " | ".join(f"{r[s]:.2f}" if s in r else "" for s in steps) + f" | {max(r.values()):.2f} |")
