"""Training under torchrun: two CPU processes with gloo stay in step, learn, and resume."""
import json
import os
import subprocess
import sys

import torch
import yaml

from conftest import tiny_config_dict
from seq2seq.run.checkpoint import load_checkpoint


# Trains as `seq2seq train` does (begin, then the loop), then writes each rank's final weights
# and random state, so the test can compare the ranks.
WORKER = """
import sys, torch
from seq2seq.training import distributed as dist
from seq2seq.run.checkpoint import save_checkpoint
from seq2seq.training.begin import begin, load_run_config
from seq2seq.training.loop import fit
config, run_dir, resume, *sets = sys.argv[1:]
session = begin(load_run_config(config, sets), run_dir, resume=resume == "resume", quiet=True)
fit(session, quiet=True)
save_checkpoint(f"{run_dir}/final.rank{dist.rank()}.pt",
                {"config": {}, "model": session.model.state_dict(), "step": session.progress.step,
                 "rng": {"torch": torch.get_rng_state()}})
dist.close()
"""


def torchrun_train(config, run_dir, *sets, resume=False, cwd):
    worker = cwd / "worker.py"
    worker.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(config), str(run_dir), "resume" if resume else "new", *sets]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def logged_losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "train.jsonl").read_text().splitlines()]


def assert_ranks_identical(run_dir, step):
    ranks = [load_checkpoint(run_dir / f"final.rank{r}.pt") for r in (0, 1)]
    assert [c["step"] for c in ranks] == [step, step]
    for name, weight in ranks[0]["model"].items():
        assert torch.equal(weight, ranks[1]["model"][name]), name
    # ... while each rank drew its own dropout masks
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])


def test_two_ranks_train_in_step_and_resume(tmp_path, synthetic_dir):
    # plateau exercises the validation score that rank 0 computes and broadcasts to the schedulers;
    # accumulation, the batches whose gradients are not synchronised
    raw = tiny_config_dict(synthetic_dir, training={"max_steps": 30, "batch_size": 16, "accum_steps": 2,
                                                    "log_every": 5,
                                                    "valid_every": 15, "num_threads": 1, "scheduler": "plateau",
                                                    "plateau_patience": 0})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    torchrun_train(config, run_dir, cwd=tmp_path)
    assert_ranks_identical(run_dir, 30)
    first = load_checkpoint(run_dir / "last.pt")
    assert first["step"] == 30 and first["progress"]["last_valid_step"] == 30

    torchrun_train(config, run_dir, "training.max_steps=60", resume=True, cwd=tmp_path)
    assert_ranks_identical(run_dir, 60)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 60
    # the resumed run went on from the saved weights rather than starting again
    assert not torch.equal(first["model"]["decoder.output.weight"],
                           load_checkpoint(run_dir / "last.pt")["model"]["decoder.output.weight"])

    losses = logged_losses(run_dir)
    assert len(losses) == 12  # 60 steps, a line every 5, written once (by rank 0 only)
    assert losses[-1] < 0.6 * losses[0]
    # only rank 0 writes: one record per validation (every 15 steps and at the end of epoch 1)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and {15, 30, 45, 60} <= set(steps) and len(steps) == 5
