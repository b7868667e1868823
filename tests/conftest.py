"""Shared fixtures: a synthetic translation task the tests generate, and tiny configs."""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from seq2seq.config import config_from_dict, deep_merge

# Tests run on 2-core machines next to other work: one thread keeps timings predictable.
torch.set_num_threads(1)

try:
    from hypothesis import settings as hypothesis_settings
except ImportError:  # only the property-based tests need it (dev extra); they import it themselves
    pass
else:
    # Property-based tests draw their examples from a seed derived from the test itself, so a
    # failure found once is found again on every run and machine (and CI never fails by chance).
    hypothesis_settings.register_profile("derandomized", derandomize=True)
    hypothesis_settings.load_profile("derandomized")


# ---- tests that need a tool the set-up installs ----

def under_ci() -> bool:
    """Whether the tests run under CI: CI services set CI (ours, .ci/run, sets CI=true)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def requires(condition: bool, what: str) -> pytest.MarkDecorator:
    """A marker for a test that needs something scripts/setup.sh installs or CI provides (node,
    the page's npm libraries, Chromium, selenium, root). Where `condition` is false the test
    skips, saying `what`; under CI it fails with the one line "CI: what" instead, because there a
    check that cannot run is a set-up that went wrong, and a skip would hide it. (Hardware a CI
    machine has not got, such as a GPU, stays a plain skipif.)"""
    if condition or not under_ci():
        return pytest.mark.skipif(not condition, reason=what)
    return pytest.mark.missing_under_ci(what)


def need(condition: bool, what: str) -> None:
    """`requires` where the condition is known only inside a fixture or test: skip, or under CI
    fail, right there."""
    if not condition:
        if under_ci():
            pytest.fail(f"CI: {what}", pytrace=False)
        pytest.skip(what)


def pytest_configure(config):
    config.addinivalue_line("markers", "missing_under_ci(what): set by conftest.requires under CI; fails the test")


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up: the test cannot run at all
def pytest_runtest_setup(item):
    for mark in item.iter_markers("missing_under_ci"):
        pytest.fail(f"CI: {mark.args[0]}", pytrace=False)


def have_chromium() -> bool:
    """Debian's chromium and chromium-driver, which the browser tests drive."""
    return shutil.which("chromium") is not None and shutil.which("chromedriver") is not None


NEEDS_CHROMIUM = ("needs Debian's chromium and chromium-driver (as root scripts/setup.sh installs them: "
                  "apt-get install chromium chromium-driver)")


def missing_page_library() -> str | None:
    """The first of the page's npm libraries (seq2seq/deploy/web/assets.json) that `seq2seq export`
    would not find, or None when all are there."""
    import json

    from seq2seq.deploy.export import page_modules
    assets = json.loads((Path(__file__).resolve().parents[1] / "seq2seq" / "deploy" / "web" / "assets.json")
                        .read_text(encoding="utf-8"))
    modules = page_modules(assets)
    return next((str(modules / source) for source in assets["libraries"]["files"].values()
                 if not (modules / source).is_file()), None)


SHARED_MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"

SRC_WORDS = ["ka", "lo", "mi", "nu", "pe", "ri", "su", "ta", "vo", "ze", "bai", "dor"]
TGT_WORDS = ["ALPHA", "BETA", "GAMMA", "DELTA", "EPS", "ZETA", "ETA", "THETA", "IOTA", "KAPPA", "LAMBDA", "MU"]
LEXICON = dict(zip(SRC_WORDS, TGT_WORDS))


def synthetic_pair(rng: random.Random, min_len: int = 2, max_len: int = 7) -> tuple[str, str]:
    """Source: random words; target: each word translated by LEXICON, in reverse order."""
    words = [rng.choice(SRC_WORDS) for _ in range(rng.randint(min_len, max_len))]
    return " ".join(words), " ".join(LEXICON[w] for w in reversed(words))


def expected_translation(src: str) -> str:
    return " ".join(LEXICON[w] for w in reversed(src.split()))


def write_synthetic(directory: Path, *, train: int = 3000, valid: int = 100, test: int = 100,
                    seed: int = 0, src: str = "src", tgt: str = "tgt") -> Path:
    """Write train/valid/test files of the synthetic task; returns the directory."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("valid", valid), ("test", test)):
        pairs = [synthetic_pair(rng) for _ in range(n)]
        (directory / f"{split}.{src}").write_text("\n".join(p[0] for p in pairs) + "\n", encoding="utf-8")
        (directory / f"{split}.{tgt}").write_text("\n".join(p[1] for p in pairs) + "\n", encoding="utf-8")
    return directory


def write_multi30k_like(directory: Path, *, src: str, tgt: str, **sizes) -> Path:
    """The synthetic task under Multi30k's split names (train, val, test_2016_flickr), as the
    experiment scripts read them."""
    write_synthetic(directory, src=src, tgt=tgt, **sizes)
    for lang in (src, tgt):
        (directory / f"valid.{lang}").rename(directory / f"val.{lang}")
        (directory / f"test.{lang}").rename(directory / f"test_2016_flickr.{lang}")
    return directory


def tiny_config_dict(data_dir: Path, **sections) -> dict:
    """A config for a very small model on the synthetic task; `sections` override parts."""
    raw = {
        "data": {"src_lang": "src", "tgt_lang": "tgt", "train": str(data_dir / "train"),
                 "valid": str(data_dir / "valid"), "test": str(data_dir / "test"),
                 "max_src_len": 20, "max_tgt_len": 20},
        "tokenizer": {"joint": True, "vocab_size": 64},
        "model": {"encoder": {"cell": "gru", "emb_size": 32, "hidden_size": 32, "dropout": 0.0},
                  "decoder": {"cell": "gru", "emb_size": 32, "hidden_size": 64, "dropout": 0.0}},
        # One thread, as the test process itself runs (above): the same numbers however busy the machine is.
        "training": {"seed": 1, "device": "cpu", "num_threads": 1, "lr": 0.005, "batch_size": 64, "batch_tokens": None,
                     "max_epochs": 15, "valid_every": 10_000, "log_every": 20, "patience": None, "keep_best": 1},
        "decoding": {"beam_size": 3, "valid_beam_size": 1, "batch_size": 50},
    }
    for name, values in sections.items():
        raw[name] = deep_merge(raw.get(name, {}), values)
    return raw


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_dir) -> Path:
    """A run directory with a tiny model trained on the synthetic task (shared by many tests)."""
    from seq2seq.training.loop import train
    run_dir = tmp_path_factory.mktemp("run")
    cfg = config_from_dict(tiny_config_dict(synthetic_dir))
    train(cfg, run_dir, quiet=True)
    return run_dir


@pytest.fixture
def multi30k() -> Path:
    if not (SHARED_MULTI30K / "train.en").exists():
        pytest.skip("Multi30k not found beside the checkout (../shared/data/multi30k)")
    return SHARED_MULTI30K


CAN_MOUNT = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None
NEEDS_ROOT = "mounting a small tmpfs needs root (and mount)"
# On the tests that use small_filesystem, so that a skip (listed by -rs) names the test itself.
needs_root = requires(CAN_MOUNT, NEEDS_ROOT)


@contextmanager
def small_filesystem(path: Path, size: str):
    """A real filesystem of `size` (a tmpfs, e.g. "1m") mounted at `path`, unmounted afterwards:
    it fills up as a real disk does. Skips the test where mounting is impossible (not root), and
    fails it under CI, which must run the tests as root so that the full-disk tests run."""
    need(CAN_MOUNT, NEEDS_ROOT)
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
    need(proc.returncode == 0, f"cannot mount a tmpfs here: {reason}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_filesystem(path: Path, leave: int) -> None:
    """Take all but about `leave` bytes of the filesystem of `path` with a filler file."""
    free = shutil.disk_usage(path).free
    with open(path / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def chi_square(counts: dict, expected: dict, n: int) -> tuple[float, int]:
    """Pearson's statistic over the outcomes expected at least 5 times (the rest pooled), and its degrees of freedom."""
    big = [k for k, p in expected.items() if p * n >= 5]
    cells = [(counts.get(k, 0), expected[k] * n) for k in big]
    rest = n - sum(c for c, _ in cells), n * (1 - sum(expected[k] for k in big))
    if rest[1] >= 5:
        cells.append(rest)
    return sum((c - e) ** 2 / e for c, e in cells), len(cells) - 1


def chi2_bound(df: int) -> float:
    """The 99.9th percentile of the chi-square distribution with `df` degrees of freedom (Wilson
    and Hilferty's approximation): a correct sampler exceeds it one time in a thousand, and the
    seeds are fixed, so the tests are repeatable."""
    z = 3.090  # the standard normal's 99.9th percentile
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
