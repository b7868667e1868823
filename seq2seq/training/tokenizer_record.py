"""What a run's tokenizers were trained from, kept beside them (RunDir.tokenizer_record): the
settings that shape them and the training files' paths, sizes and modification times. A run
compares it before reusing them, so tokenizers whose settings or data changed are never reused
silently (training/begin.py calls check_tokenizers before preparing them and record_tokenizers after).
"""
from __future__ import annotations

import dataclasses
import json
import logging

from seq2seq.training import distributed as dist
from seq2seq.run.checkpoint import atomic_write
from seq2seq.config import Config
from seq2seq.data import corpus_tags
from seq2seq.data.prepare import fingerprint
from seq2seq.run.rundir import RunDir

log = logging.getLogger("seq2seq")


def tokenizer_record(cfg: Config) -> dict:
    """What a run's tokenizers are trained from: the settings that shape them and the training
    files (path, size, modification time), kept beside them in RunDir.tokenizer_record."""
    d, ft = cfg.data, cfg.finetune
    # tokenizer.sampling changes how training text is cut, not the tokenizer.
    settings = {f"tokenizer.{k}": v for k, v in dataclasses.asdict(cfg.tokenizer).items() if k != "sampling"}
    settings.update({"training.seed": cfg.training.seed, "data.src_lang": d.src_lang, "data.tgt_lang": d.tgt_lang,
                     "data.src_prefix_tag": d.src_prefix_tag, "data.skip_invalid_utf8": d.skip_invalid_utf8,
                     "model.share_embeddings": cfg.model.share_embeddings, "init_from": cfg.init_from,
                     "finetune.vocabulary": ft.vocabulary,
                     "finetune.transfer_joint_with_parent": ft.transfer_joint_with_parent,
                     "finetune.transfer_parent_pairs": ft.transfer_parent_pairs})
    # null without tags, as records written before corpus tags existed read
    settings["data.train[].tag"] = corpus_tags(d) or None
    return {"settings": settings, "data": fingerprint(d, [])["inputs"]}


def _record_changes(stored: dict, current: dict) -> list[str]:
    """What differs between a stored tokenizer record and the current one, in words."""
    def show(value) -> str:
        return "null" if value is None else str(value)

    old, new = stored.get("settings", {}), current["settings"]
    changes = [f"{key} changed ({show(old.get(key))} -> {show(value)})" for key, value in new.items()
               if old.get(key) != value]
    old_data = [tuple(x) for x in stored.get("data", [])]
    new_data = [tuple(x) for x in current["data"]]
    if old_data != new_data:
        differing = [n[0] for o, n in zip(old_data, new_data) if o != n] or [n[0] for n in new_data]
        changes.append(f"the training data changed ({differing[0]})")
    return changes


def check_tokenizers(cfg: Config, run: RunDir, *, resume: bool) -> None:
    """Tokenizers trained from other settings or data are never reused silently: a new run
    trains them again; --resume keeps them (its model was trained with them) and says what
    changed. Tokenizers without a record (copied in by hand, or from an older version) are used
    with a warning."""
    if not dist.is_main():
        return
    present = [f for f in dict.fromkeys([*run.tokenizer_files(cfg), *run.kept_files()]) if f.exists()]
    if not present:
        return
    try:
        stored = json.loads(run.tokenizer_record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("tokenizer: %s has no record of the settings and data it was trained from; using it as it is",
                    present[0])
        return
    changes = _record_changes(stored, tokenizer_record(cfg))
    if not changes:
        return
    if resume:
        log.warning("tokenizer: %s since %s was trained; --resume keeps the tokenizer the model was trained with",
                    "; ".join(changes), present[0].name)
        return
    log.warning("tokenizer: %s since %s was trained: training it again", "; ".join(changes), present[0].name)
    for f in [*present, run.tokenizer_record]:
        f.unlink()


def record_tokenizers(cfg: Config, run: RunDir) -> None:
    """Write what the run's tokenizers were trained from (rank 0)."""
    if dist.is_main():
        text = json.dumps(tokenizer_record(cfg), indent=1) + "\n"
        atomic_write(run.tokenizer_record, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                     what="the tokenizer record")
