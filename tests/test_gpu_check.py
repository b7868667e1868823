"""scripts/gpu_check.sh as CI can run it: on the CPU with tiny sizes (--device cpu --tiny), the
same script and phases as on the GPU, so that nothing but the GPU itself is untested when the
real check runs."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from conftest import synthetic_pair

REPO = Path(__file__).resolve().parents[1]


def multi30k_like(directory: Path) -> Path:
    """The synthetic task under Multi30k's file names."""
    rng = random.Random(0)
    directory.mkdir()
    for split, n in (("train", 300), ("val", 20), ("test_2016_flickr", 20)):
        pairs = [synthetic_pair(rng) for _ in range(n)]
        (directory / f"{split}.en").write_text("\n".join(p[0] for p in pairs) + "\n", encoding="utf-8")
        (directory / f"{split}.de").write_text("\n".join(p[1] for p in pairs) + "\n", encoding="utf-8")
    return directory


def test_the_gpu_check_runs_dry_on_the_cpu(tmp_path):
    data, out = multi30k_like(tmp_path / "multi30k"), tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)  # the project is not installed there: PYTHONPATH=.
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--device", "cpu", "--tiny", "--data", str(data)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    result = json.loads((out / "gpu_check.json").read_text())
    phases = result["phases"]
    assert list(phases) == ["tests", "throughput_peer", "throughput_recipe", "profile", "quality", "decoding"]
    assert not [name for name, p in phases.items() if "error" in p or "skipped" in p], phases
    assert {"fp32/4", "fp32/8", "bf16/8"} <= set(phases["throughput_recipe"])
    assert phases["profile"]["fp32"]["syncs_per_update"] == 0
    assert phases["quality"]["fp32_on_cpu"]["identical_lines"] == 1.0  # the dry run decodes on the CPU twice
    assert {"fp32/beam1/4", "bf16/beam5/8"} <= set(phases["decoding"])
    assert "| fp32 |" in (out / "gpu_check.md").read_text()
