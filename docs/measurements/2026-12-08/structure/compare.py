"""Compare two proof folders: logged losses, final weights, decoded outputs (bytes)."""
import json, sys, hashlib
from pathlib import Path
import torch
a, b = Path(sys.argv[1]), Path(sys.argv[2])
ok = True
decode_only = not (b / "gru").is_dir()
for run in [] if decode_only else ["gru", "gru_s2", "lstm"]:
    la = [json.loads(l)["loss"] for l in (a / run / "train.jsonl").read_text().splitlines()]
    lb = [json.loads(l)["loss"] for l in (b / run / "train.jsonl").read_text().splitlines()]
    same_loss = la == lb and len(la) > 0
    ma = [json.loads(l) for l in (a / run / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (b / run / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "elapsed"} for r in rs]
    same_metrics = strip(ma) == strip(mb)
    for ck in ["last.pt", "best.pt"]:
        wa = torch.load(a / run / ck, weights_only=True)["model"]
        wb = torch.load(b / run / ck, weights_only=True)["model"]
        same_w = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        print(f"{run}/{ck}: weights bitwise equal: {same_w}")
        ok &= same_w
    print(f"{run}: {len(la)} logged losses equal: {same_loss}; {len(ma)} validation records equal (but elapsed): {same_metrics}")
    ok &= same_loss and same_metrics
for f in sorted((a / "hyp").iterdir()):
    g = b / "hyp" / f.name
    if f.name.endswith(".distinct_md5"):
        sa, sb = set(f.read_text().split()), set(g.read_text().split())
        print(f"hyp/{f.name}: distinct outputs of 5 runs: old {len(sa)}, new {len(sb)}, shared {len(sa & sb)}, "
              f"new outputs all seen from the old code: {sb <= sa}")
        continue
    same = g.is_file() and f.read_bytes() == g.read_bytes()
    print(f"hyp/{f.name}: {len(f.read_bytes().splitlines())} lines, byte-identical: {same}")
    ok &= same
print("ALL EQUAL" if ok else "DIFFERENCES FOUND")
