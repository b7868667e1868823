# patch_decay.py RUN START EVERY: give a copied run's last.pt the decay_start schedule, to resume with it
import sys, torch
run, start, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ck = torch.load(f"{run}/last.pt", weights_only=True)
t = ck["config"]["training"]
t.update(decay_start=start, decay_every=every, decay_factor=0.5)
torch.save(ck, f"{run}/last.pt")
print(run, ck["progress"]["step"], ck["optimizer"]["param_groups"][0]["lr"], {k: t[k] for k in ("decay_start", "decay_every", "min_lr", "scheduler")})
