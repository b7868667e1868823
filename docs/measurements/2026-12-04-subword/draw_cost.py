"""What drawing one piece per sentence costs at batch 64 with the default recipe's model (8,000
target pieces; untrained weights, as speed does not depend on them), on one thread, the best of
5 rounds of 50 calls, in ms: the model's decoding step, greedy's argmax, sampling by inverting
the cumulative distribution (search.draw: one hashed random number per sentence), and the
Gumbel-max trick with one hashed random number per sentence and piece (written out here only).

    python docs/measurements/2026-12-04-subword/draw_cost.py
"""
import time
from pathlib import Path

import torch

from seq2seq.config import load_config
from seq2seq.data import pad
from seq2seq.model import build_model
from seq2seq.search import draw, mix32, uniform

torch.set_num_threads(1)
torch.manual_seed(0)
cfg = load_config(Path(__file__).resolve().parents[3] / "configs" / "multi30k_en_de.yaml")
model = build_model(cfg.model, src_vocab_size=8000, tgt_vocab_size=8000).eval().for_decoding()
src_ids = [[4 + (i * 7 + j) % 7000 for j in range(14)] for i in range(64)]
src, lengths = pad(src_ids), torch.tensor([14] * 64)


def gumbel(lp: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """One hashed uniform per (sentence, piece), then the argmax of lp plus Gumbel noise."""
    piece_keys = mix32(torch.arange(lp.size(1)) ^ 0x1F2E3D4C)
    u = ((mix32(keys.unsqueeze(1) ^ piece_keys) >> 8).float() + 0.5) * 2.0 ** -24
    return (lp - torch.log(-torch.log(u))).argmax(-1)


with torch.no_grad():
    memory, state = model.start(src, lengths)
    prev = torch.full((64,), 2)
    lp = model.step(prev, state, memory)[0]
    u = uniform(1, torch.arange(64), 3)
    keys = (u * 2 ** 24).long()
    calls = {"step": lambda: model.step(prev, state, memory), "argmax": lambda: lp.argmax(-1),
             "gumbel_every_piece": lambda: gumbel(lp, keys),
             "draw": lambda: draw(lp, u, top_k=None, temperature=1.0),
             "draw_top10": lambda: draw(lp, u, top_k=10, temperature=1.0),
             "draw_temperature2": lambda: draw(lp, u, top_k=None, temperature=2.0)}
    best = {name: float("inf") for name in calls}
    for _ in range(5):
        for name, call in calls.items():
            call()
            start = time.perf_counter()
            for _ in range(50):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / 50 * 1e3)
    print({name: round(ms, 3) for name, ms in best.items()})
