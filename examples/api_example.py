"""The seq2seq Python API in one runnable script.

It writes a toy translation task (each source word maps to one target word, and the order
is reversed), trains a tiny model on it for a few seconds on the CPU, then translates with
the trained run: plain text, n-best lists with scores, and attention weights.

    python examples/api_example.py [WORK_DIR]
"""
import random
import sys
import tempfile
from pathlib import Path

import seq2seq
from seq2seq import Translator, config_from_dict

LEXICON = {"ka": "ALPHA", "lo": "BETA", "mi": "GAMMA", "nu": "DELTA", "pe": "EPS", "ri": "ZETA",
           "su": "ETA", "ta": "THETA"}


def write_task(data_dir: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 2000), ("valid", 50)):
        src_lines, tgt_lines = [], []
        for _ in range(n):
            words = [rng.choice(list(LEXICON)) for _ in range(rng.randint(2, 6))]
            src_lines.append(" ".join(words))
            tgt_lines.append(" ".join(LEXICON[w] for w in reversed(words)))
        (data_dir / f"{split}.src").write_text("\n".join(src_lines) + "\n", encoding="utf-8")
        (data_dir / f"{split}.tgt").write_text("\n".join(tgt_lines) + "\n", encoding="utf-8")


def main(work_dir: Path) -> None:
    data_dir, run_dir = work_dir / "data", work_dir / "run"
    write_task(data_dir)

    # A config is validated like a YAML file would be: a misspelled key is an error.
    # seq2seq.load_config("my.yaml", ["training.lr=3e-4"]) reads one from disk instead.
    config = config_from_dict({
        "data": {"src_lang": "src", "tgt_lang": "tgt", "train": str(data_dir / "train"),
                 "valid": str(data_dir / "valid"), "test": None},
        "tokenizer": {"vocab_size": 48},
        "model": {"encoder": {"cell": "gru", "emb_size": 32, "hidden_size": 32, "dropout": 0.0},
                  "decoder": {"cell": "gru", "emb_size": 32, "hidden_size": 64, "dropout": 0.0}},
        "training": {"device": "cpu", "num_threads": 1, "lr": 0.005, "batch_size": 64, "max_epochs": 8, "patience": None,
                     "valid_every": 100_000, "keep_best": 1},
        "decoding": {"beam_size": 3},
    })
    result = seq2seq.train(config, run_dir, quiet=True)
    print(f"trained {result['step']} steps; best validation BLEU {result['best_score']:.1f}")

    translator = Translator.load(run_dir, device="cpu")
    sentences = ["ka lo mi", "su ta pe ri"]
    for src, out in zip(sentences, translator.translate(sentences, beam_size=3)):
        print(f"{src}  ->  {out}")

    # n-best lists: one list per input, best first.
    for src, outs in zip(sentences, translator.translate(sentences, beam_size=4, nbest=2)):
        print(f"{src}  ->  {outs}")

    # Scores, pieces and attention weights (rows: output pieces and EOS; columns: source pieces).
    best = translator.translate_detailed(["nu ka"], beam_size=3, return_attention=True)[0][0]
    print(f"score {best.score:.3f}, source pieces {best.src_pieces}, output pieces {best.tgt_pieces}")
    print(f"attention {tuple(best.attention.shape)}; each row sums to 1:",
          [round(float(row.sum()), 3) for row in best.attention])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
