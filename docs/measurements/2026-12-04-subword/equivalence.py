"""With sampling and tags off nothing changes: train a small model on a synthetic word-for-word
task (two corpora with weights, tokenizer.drop_unseen, data.src_prefix_tag; 60 updates) with the
seq2seq on PYTHONPATH, and print hashes of what it produced: tokenizer, kept list, prepared
store, final weights, greedy and beam-3 translations. Run once with the code before #30 (a `git
archive` of the commit before it) and once after: the two outputs must be equal.

    PYTHONPATH=CHECKOUT python equivalence.py OUT_DIR > result.json
"""
import hashlib
import json
import random
import sys
from pathlib import Path

import torch

from seq2seq.config import config_from_dict
from seq2seq.trainer import train
from seq2seq.translator import Translator

WORDS = {"ka": "ALPHA", "lo": "BETA", "mi": "GAMMA", "nu": "DELTA", "pe": "EPS", "ri": "ZETA", "su": "ETA",
         "ta": "THETA", "vo": "IOTA", "ze": "KAPPA"}


def write_task(directory: Path) -> None:
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 1500), ("valid", 50), ("test", 50)):
        src = [" ".join(rng.choice(list(WORDS)) for _ in range(rng.randint(2, 7))) for _ in range(n)]
        (directory / f"{split}.src").write_text("\n".join(src) + "\n")
        (directory / f"{split}.tgt").write_text("\n".join(" ".join(WORDS[w] for w in reversed(s.split()))
                                                          for s in src) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    data = out.parent / "equivalence_data"
    if not (data / "train.src").exists():
        write_task(data)
    cfg = config_from_dict({
        "data": {"src_lang": "src", "tgt_lang": "tgt", "valid": str(data / "valid"), "test": str(data / "test"),
                 "train": [{"path": str(data / "train")}, {"path": str(data / "train"), "weight": 0.5}],
                 "max_src_len": 20, "max_tgt_len": 20, "src_prefix_tag": True},
        "tokenizer": {"vocab_size": 64, "drop_unseen": True},
        "model": {"encoder": {"cell": "gru", "emb_size": 32, "hidden_size": 32, "dropout": 0.1},
                  "decoder": {"cell": "gru", "emb_size": 32, "hidden_size": 64, "dropout": 0.1}},
        "training": {"seed": 1, "device": "cpu", "lr": 0.005, "batch_size": 64, "max_steps": 60, "max_epochs": 3,
                     "valid_every": 10_000, "patience": None, "keep_best": 1},
        "decoding": {"beam_size": 3, "valid_beam_size": 1, "batch_size": 50}})
    train(cfg, out, quiet=True)

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    result = {name: digest((out / name).read_bytes()) for name in ("spm.joint.model", "vocab.source.txt")}
    result.update({f"prepared/{name}": digest((out / "prepared" / name).read_bytes())
                   for name in ("src.ids", "tgt.ids", "src.len", "tgt.off")})
    weights = torch.load(out / "last.pt", weights_only=True)["model"]
    result["weights"] = digest(b"".join(v.numpy().tobytes() for v in weights.values()))
    translator = Translator.load(out, device="cpu")
    lines = (data / "test.src").read_text().splitlines()
    result["greedy"] = digest("\n".join(translator.translate(lines, beam_size=1)).encode())
    result["beam3"] = digest("\n".join(translator.translate(lines, beam_size=3)).encode())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
