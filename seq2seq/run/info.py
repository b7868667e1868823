"""`seq2seq info`: what is inside a run directory, in one screen."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from seq2seq.data import describe_train
from seq2seq.run.rundir import BEST, open_run


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per submodule ('encoder.rnn', 'decoder.attention', ...) and the total; a
    weight shared by two modules counts in each of them but once in the total."""
    counts = {}
    for top_name, top in model.named_children():
        for name, child in top.named_children():
            if _count(child):  # dropout and other weightless parts say nothing here
                counts[f"{top_name}.{name}"] = _count(child)
    counts["total"] = _count(model)
    return counts


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return records


def run_info(run_dir: str | Path, checkpoint: str = BEST) -> dict[str, Any]:
    """Everything `seq2seq info` shows, as plain data."""
    run = open_run(run_dir, checkpoint)
    cfg, ckpt, path, src_tok, tgt_tok = run.config, run.checkpoint, run.path, run.src_tok, run.tgt_tok
    d, t, m = cfg.data, cfg.training, cfg.model
    run_dir = run.dir.path
    records = _read_metrics(run.dir.metrics)
    best = [r for r in records if r.get("best")]
    last = records[-1] if records else {}
    info: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint": path.name,
        "checkpoint_step": ckpt.get("step"),
        "parameters": parameter_counts(run.model),
        "vocabulary": {"source": len(src_tok), "target": len(tgt_tok), "joint": cfg.tokenizer.joint},
        "training": {"steps": last.get("step"), "epoch": last.get("epoch"),
                     "minutes": round(last["elapsed"] / 60, 1) if "elapsed" in last else None,
                     "validations": len(records)},
        "best": ({k: v for k, v in best[-1].items() if k != "best"} if best else None),
        "early_stop_metric": t.early_stop_metric,
        "kept_checkpoints": [p.name for p in run.dir.kept_checkpoints()],
        "config": {
            "data": describe_train(d),
            "tokenizer": f"{cfg.tokenizer.model_type}, {cfg.tokenizer.vocab_size} pieces, "
                         f"{'joint' if cfg.tokenizer.joint else 'separate'}",
            "encoder": f"{m.encoder.num_layers} x {'bi' if m.encoder.bidirectional else ''}{m.encoder.cell}, "
                       f"emb {m.encoder.emb_size}, hidden {m.encoder.hidden_size}, dropout {m.encoder.dropout}",
            "decoder": f"{m.decoder.num_layers} x {m.decoder.cell}, emb {m.decoder.emb_size}, hidden "
                       f"{m.decoder.hidden_size}, {m.decoder.attention} attention, input feeding "
                       f"{'on' if m.decoder.input_feeding else 'off'}, dropout {m.decoder.dropout}",
            "training": f"{t.optimizer} lr {t.lr}, batch {t.batch_size} sentences / {t.batch_tokens} tokens, "
                        f"label smoothing {t.label_smoothing}, scheduler {t.scheduler}, precision {t.precision}",
            "decoding": f"beam {cfg.decoding.beam_size}, length penalty {cfg.decoding.length_penalty}, "
                        f"precision {cfg.decoding.precision}",
        },
    }
    return info


def format_info(info: dict[str, Any]) -> str:
    """Human-readable form of run_info()."""
    out = [f"run         {info['run_dir']} ({info['checkpoint']}, step {info['checkpoint_step']})"]
    v = info["vocabulary"]
    out.append(f"vocabulary  source {v['source']}, target {v['target']}" + (" (joint)" if v["joint"] else ""))
    tr = info["training"]
    out.append(f"training    {tr['steps']} steps, {tr['epoch']} epochs, {tr['minutes']} minutes, "
               f"{tr['validations']} validations")
    best = info["best"]
    if best:
        out.append(f"best        step {best['step']} (by {info['early_stop_metric']}): BLEU {best['bleu']:.2f}, "
                   f"chrF {best['chrf']:.2f}, loss {best['valid_loss']:.3f}, ppl {best['valid_ppl']:.2f}")
    else:
        out.append("best        no validation yet")
    if info["kept_checkpoints"]:
        out.append(f"kept        {', '.join(info['kept_checkpoints'])}")
    out.append("parameters")
    width = max(len(k) for k in info["parameters"])
    for name, n in info["parameters"].items():
        out.append(f"  {name:<{width}}  {n:>12,}")
    out.append("config")
    for key, text in info["config"].items():
        out.append(f"  {key:<9} {text}")
    return "\n".join(out)
