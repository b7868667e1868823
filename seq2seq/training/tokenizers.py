"""A run's tokenizers: trained on its training data, copied from a parent run, or transferred
from one (finetune.vocabulary), written into the run directory the first time and reused after."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from seq2seq.config import Config
from seq2seq.data import corpus_tags, tag_piece, tags_in
from seq2seq.data.sampling import tokenizer_sample
from seq2seq.data.tokenizer import Tokenizer, add_pieces, read_kept, side_lists, train_tokenizer, write_kept
from seq2seq.errors import ConfigError
from seq2seq.run.rundir import RunDir
from seq2seq.training import distributed as dist
from seq2seq.training.finetune import KEPT_SIDES, Parent, check_kept_side, parent_sample

log = logging.getLogger("seq2seq")


def prepare_tokenizers(cfg: Config, run: RunDir, parent: Parent | None = None,
                       sample: tuple[list[str], list[str]] | None = None) -> tuple[Tokenizer, Tokenizer]:
    """The run's tokenizers, written into the run directory the first time. A side that a
    parent's vocabulary keeps (finetune.vocabulary) gets the parent's SentencePiece model byte
    for byte; every other side is trained on the training data (at most tokenizer.sample_size
    pairs of it: `sample`, drawn here when not given; with transfer_joint_with_parent, plus a
    sample of the parent's). With tokenizer.drop_unseen each side then keeps the pieces its
    training text uses, unless it keeps the parent's whole vocabulary."""
    t, ft = cfg.tokenizer, cfg.finetune
    src_file, tgt_file = run.tokenizer_files(cfg)
    _, tgt_kept = run.kept_files()
    kept_sides = KEPT_SIDES[ft.vocabulary] if parent is not None else ()
    keeps_parent = cfg.init_from is not None and ft.vocabulary == "keep"
    missing = not src_file.exists() or not tgt_file.exists() or (
        t.drop_unseen and not keeps_parent and not tgt_kept.exists())
    # Only the process that trains them reads the corpora for a sample (a parent's checks need it on all).
    if sample is None and (parent is not None or (missing and dist.is_main())):
        sample = tokenizer_sample(cfg.data, size=t.sample_size, seed=cfg.training.seed)
    train_src, train_tgt = sample if sample is not None else ([], [])
    if parent is not None:
        if ft.vocabulary == "keep" and t.joint != parent.config.tokenizer.joint:
            raise ConfigError(f"tokenizer.joint: finetune.vocabulary: keep uses the parent's tokenizer, which has "
                              f"joint: {str(parent.config.tokenizer.joint).lower()}")
        sides = {"source": (parent.src_tok, train_src), "target": (parent.tgt_tok, train_tgt)}
        for side in kept_sides:
            check_kept_side(cfg, side, *sides[side])
    if dist.is_main():
        write_tokenizers(cfg, run, parent, kept_sides, train_src, train_tgt)
    dist.barrier()
    src_tok, tgt_tok = run.open_tokenizers(cfg)
    check_corpus_tags(cfg, src_tok)
    return src_tok, tgt_tok


def write_tokenizers(cfg: Config, run: RunDir, parent: Parent | None, kept_sides: tuple,
                     train_src: list[str], train_tgt: list[str]) -> None:
    """Rank 0: copy the kept sides from the parent, train the missing SentencePiece models, and
    write tokenizer.drop_unseen's lists of kept pieces."""
    d, t = cfg.data, cfg.tokenizer
    src_file, tgt_file = run.tokenizer_files(cfg)
    src_kept, tgt_kept = run.kept_files()
    keeps_parent = cfg.init_from is not None and cfg.finetune.vocabulary == "keep"
    src_text, tgt_text = train_src, train_tgt
    tags = tags_in(train_src) if d.src_prefix_tag else []
    if parent is not None:
        src_text, tgt_text, tags = take_from_parent(cfg, run, parent, kept_sides, train_src, train_tgt, tags)
    tags += [tag_piece(tag) for tag in corpus_tags(d)]
    options = dict(vocab_size=t.vocab_size, model_type=t.model_type, character_coverage=t.character_coverage)
    if t.joint and not src_file.exists():
        train_tokenizer(list(src_text) + list(tgt_text), src_file, user_defined_symbols=tags, **options)
    if not t.joint and not src_file.exists():
        train_tokenizer(src_text, src_file, user_defined_symbols=tags, **options)
    if not t.joint and not tgt_file.exists():
        train_tokenizer(tgt_text, tgt_file, **options)
    # Fine-tuning with vocabulary keep has copied the parent's lists (or its lack of them).
    if t.drop_unseen and not keeps_parent and not tgt_kept.exists():
        src_list, tgt_list = side_lists(Tokenizer(src_file), Tokenizer(tgt_file), train_src, train_tgt,
                                        shared=cfg.model.share_embeddings)
        write_kept(src_kept, src_list)
        write_kept(tgt_kept, tgt_list)
        log.info("tokenizer.drop_unseen: keeping %d source / %d target pieces seen in the training data",
                 len(src_list), len(tgt_list))


def take_from_parent(cfg: Config, run: RunDir, parent: Parent, kept_sides: tuple, src_text: list[str],
                     tgt_text: list[str], tags: list[str]) -> tuple[list[str], list[str], list[str]]:
    """What a parent gives a child's tokenizers: its kept SentencePiece models (and lists), a
    sample of its data to train on (transfer_joint_with_parent), and its language tags. Returns
    the texts to train on and the tags to keep as single pieces."""
    ft = cfg.finetune
    src_file, tgt_file = run.tokenizer_files(cfg)
    src_kept, tgt_kept = run.kept_files()
    for side, file, parent_tok in (("source", src_file, parent.src_tok), ("target", tgt_file, parent.tgt_tok)):
        if side in kept_sides:
            shutil.copyfile(parent_tok.path, file)
    if ft.vocabulary == "keep":
        for parent_list, child_list in zip(RunDir(parent.run_dir).kept_files(), (src_kept, tgt_kept)):
            if parent_list.is_file():
                shutil.copyfile(parent_list, child_list)
    elif ft.transfer_joint_with_parent:
        # Each side learns from the parent's same side: that is the vocabulary its rows come from.
        p_src, p_tgt = parent_sample(parent.config.data, ft.transfer_parent_pairs or len(src_text), cfg.training.seed)
        src_text, tgt_text = src_text + p_src, tgt_text + p_tgt
        log.info("tokenizer: training on the new data plus %d pairs of the parent's data", len(p_src))
    if "source" in kept_sides:
        add_corpus_tags(cfg, src_file, src_kept, tgt_kept)
    if cfg.data.src_prefix_tag:
        # The parent's tags stay single pieces so that their rows (and its languages) carry over.
        tags = sorted(set(tags) | set(parent.tags()))
    return src_text, tgt_text, tags


def add_corpus_tags(cfg: Config, src_file: Path, src_kept: Path, tgt_kept: Path) -> None:
    """A source tokenizer kept from a parent learns the corpus tags it lacks as new pieces at the
    end of its vocabulary (and of its kept list, with tokenizer.drop_unseen): the parent's pieces
    keep their ids and rows, a tag's row starts fresh (finetune.py routes the weights)."""
    sp = Tokenizer(src_file).sp
    new = [piece for tag in corpus_tags(cfg.data) if sp.piece_to_id(piece := tag_piece(tag)) == sp.unk_id()]
    if not new:
        return
    size = sp.get_piece_size()
    add_pieces(src_file, new)
    # One embedding matrix for both sides keeps one list for both.
    for path in (src_kept, tgt_kept) if cfg.model.share_embeddings else (src_kept,):
        kept = read_kept(path)
        if kept is not None:
            write_kept(path, kept + list(range(size, size + len(new))))
    log.info("tokenizer: the parent's source tokenizer learns the corpus tags %s as new pieces", ", ".join(new))


def check_corpus_tags(cfg: Config, src_tok: Tokenizer) -> None:
    """Every corpus tag is one piece of the source tokenizer, or a ConfigError naming it."""
    for i, corpus in enumerate(cfg.data.train):
        if corpus.tag and src_tok.encode(corpus.tag) != [src_tok.piece_to_id(tag_piece(corpus.tag))]:
            raise ConfigError(f"data.train[{i}].tag: {corpus.tag} is not one piece of the source tokenizer "
                              f"{src_tok.path}, which was trained without it; train new tokenizers (train "
                              f"--overwrite, or remove the spm.*.model files from the run directory)")
