"""Validation loss (per target token, no smoothing) of the child model as it starts, before any
update: fresh new rows against spelled ones, and what the new rows cost at the start."""
import sys, tempfile, torch
sys.path.insert(0, "/work/main")
from seq2seq.start import load_run_config, begin
from seq2seq.validation import validation_loss
torch.set_num_threads(1)
cfg_path = "/work/exp/ft2000/seed1/keep_source_2000.yaml"
for new in ("fresh", "spelled"):
    cfg = load_run_config(cfg_path, [f"finetune.new_pieces={new}", "training.num_threads=1"])
    with tempfile.TemporaryDirectory() as d:
        s = begin(cfg, d, quiet=True)
        print(new, "validation loss at step 0:", round(validation_loss(s.model, s.valid.pairs, s.device), 3), flush=True)
