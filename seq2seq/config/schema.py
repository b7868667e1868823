"""The config's shape: nested frozen dataclasses, each key with its documented default, help
text and numeric range. A YAML key has the same name as the constructor argument it feeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

# Upper bounds of numeric keys: what the libraries behind them accept, with room to spare.
COUNT_MAX = 2**31 - 1           # counts and sizes: torch and the store keep them as int32 or int64
SIZE_MAX = 65_536               # units of one layer: a 65,536-unit LSTM already has 34G weights
SEED_MAX = 2**32 - 1            # the seed is combined with ranks and steps below torch's 2**64 limit
# SentencePiece parses vocab_size as an int32, and its unigram trainer works with 1.1 * vocab_size.
SPM_VOCAB_MAX = 1_952_257_860

def _opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         min_exclusive: bool = False, max_exclusive: bool = False, shorthand: str | None = None) -> Any:
    """A dataclass field carrying its help text and numeric range (for validation and docs);
    `shorthand`: a list-of-sections field also takes a string, as [{SHORTHAND: string}]."""
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive, "max_exclusive": max_exclusive,
            "shorthand": shorthand}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainCorpus:
    """One training corpus: its files and its share of each epoch."""
    path: str = _opt("", "path prefix of the corpus files (PATH.SRC_LANG, PATH.TGT_LANG)")
    weight: float = _opt(1.0, "share of each epoch's pairs drawn from this corpus, relative to the others",
                         min=0.0, max=1e6, min_exclusive=True)
    tag: Optional[str] = _opt(None, "a piece such as <bt> put before every source sentence of this corpus (tagged "
                              "back-translation: the model learns which pairs are synthetic); one SentencePiece "
                              "piece, never added when translating; null: none")


@dataclass(frozen=True)
class DataConfig:
    src_lang: str = _opt("en", "source language code; files are PREFIX.SRC_LANG")
    tgt_lang: str = _opt("de", "target language code; files are PREFIX.TGT_LANG")
    train: list[TrainCorpus] = _opt(
        [TrainCorpus("data/multi30k/train")], "the training corpora `- {path: PREFIX, weight: W}` (and `tag: <bt>` "
        "for a tagged corpus), whose pairs each epoch draws in proportion to their weights (paths relative to the "
        "working directory); a single path prefix `train: PREFIX` is short for one corpus", shorthand="path")
    valid: str = _opt("data/multi30k/val", "path prefix of the validation files")
    test: Optional[str] = _opt("data/multi30k/test_2016_flickr", "path prefix of a test set (used by scripts), or null")
    max_src_len: int = _opt(100, "training pairs whose source has more pieces are dropped (and counted)", min=1,
                          max=COUNT_MAX)
    max_tgt_len: int = _opt(100, "training pairs whose target has more pieces are dropped (and counted)", min=1,
                          max=COUNT_MAX)
    max_len_ratio: Optional[float] = _opt(None, "training pairs whose longer side has more than this many times "
                                          "the pieces of the shorter are dropped (and counted); null: no limit",
                                          min=1.0, max=1e6)
    drop_identical: bool = _opt(True, "drop (and count) training pairs whose source is identical to their target")
    skip_invalid_utf8: bool = _opt(False, "skip (and count) lines that are not UTF-8 instead of stopping")
    num_workers: int = _opt(1, "processes that encode the training corpora when preparing the store", min=1,
                           max=1024)
    cache_dir: Optional[str] = _opt(None, "where prepared stores go, one per set of inputs, shared by every run "
                                    "that uses the same data and tokenizers (null: RUN_DIR/prepared)")
    src_prefix_tag: bool = _opt(False, "start every source with the target-language tag <2TGT_LANG> (one "
                                "SentencePiece piece) so one model can serve several targets; sources that "
                                "already start with a <2xx> tag keep theirs")


@dataclass(frozen=True)
class SubwordSampling:
    """Subword regularisation: training pairs segmented at random, a new segmentation each epoch."""
    alpha: Optional[float] = _opt(None, "unigram models: sample segmentations with this smoothing (Kudo 2018; "
                                  "0.1-0.5 is usual, smaller is more random); null: off", min=0.0, max=1.0,
                                  min_exclusive=True)
    nbest_size: int = _opt(-1, "unigram: draw among this many best segmentations (2 or more); -1: among all of "
                           "them", min=-1, max=512)
    dropout: Optional[float] = _opt(None, "bpe models: BPE-dropout, the chance that each merge is skipped "
                                    "(Provilkov 2020; 0.1 is usual); null: off", min=0.0, max=1.0,
                                    min_exclusive=True)
    copies: int = _opt(4, "random segmentations of the training corpora that the prepared store holds; epoch e "
                       "trains on copy (e - 1) mod copies (each costs a deterministic encoding's time and disk)",
                       min=1, max=1000)

    @property
    def on(self) -> bool:
        """Whether training text is cut at random."""
        return self.alpha is not None or self.dropout is not None


@dataclass(frozen=True)
class TokenizerConfig:
    joint: bool = _opt(True, "one SentencePiece model over both languages (needed for share_embeddings)")
    vocab_size: int = _opt(8000, "pieces per SentencePiece model", min=8, max=SPM_VOCAB_MAX)
    model_type: Literal["bpe", "unigram"] = _opt("bpe", "SentencePiece algorithm")
    character_coverage: float = _opt(1.0, "share of characters the model must cover", min=0.9, max=1.0)
    sample_size: int = _opt(1_000_000, "SentencePiece trains on at most this many training pairs, a seeded "
                            "sample drawn while streaming the corpora (all of them when fewer)", min=1,
                            max=COUNT_MAX)
    drop_unseen: bool = _opt(False, "each side's vocabulary keeps only the pieces its training text uses "
                             "(as OpenNMT-py builds vocabularies): smaller embeddings and output layer; "
                             "other pieces are spelled out in characters")
    sampling: SubwordSampling = field(default_factory=SubwordSampling)


@dataclass(frozen=True)
class EncoderConfig:
    cell: Literal["lstm", "gru"] = _opt("lstm", "recurrent cell")
    emb_size: int = _opt(256, "source embedding size", min=1, max=SIZE_MAX)
    hidden_size: int = _opt(256, "units per direction (a bidirectional encoder outputs 2 * hidden_size)", min=1,
                            max=SIZE_MAX)
    num_layers: int = _opt(1, "stacked recurrent layers", min=1, max=1000)
    bidirectional: bool = _opt(True, "read the source in both directions")
    dropout: float = _opt(0.3, "dropout between layers, and on the embeddings and outputs where emb_dropout and "
                          "output_dropout are null", min=0.0, max=1.0)
    emb_dropout: Optional[float] = _opt(None, "dropout on the source embeddings (null: dropout)", min=0.0, max=1.0)
    output_dropout: Optional[float] = _opt(None, "dropout on the encoder's outputs, the memory the attention reads "
                                           "(null: dropout)", min=0.0, max=1.0)
    word_dropout: float = _opt(0.0, "share of source positions whose whole embedding is zeroed in training "
                               "(Marian's word dropout; padding is never dropped)", min=0.0, max=1.0,
                               max_exclusive=True)
    layer_norm: bool = _opt(False, "layer-normalize the input and recurrent gate pre-activations of every cell "
                            "(runs the recurrence written out, also on a GPU; cannot be exported to ONNX)")


@dataclass(frozen=True)
class DecoderConfig:
    cell: Literal["lstm", "gru"] = _opt("lstm", "recurrent cell")
    emb_size: int = _opt(256, "target embedding size", min=1, max=SIZE_MAX)
    hidden_size: int = _opt(512, "decoder units (also the size of the attentional vector)", min=1,
                            max=SIZE_MAX)
    num_layers: int = _opt(1, "stacked recurrent layers", min=1, max=1000)
    attention: Literal["additive", "dot", "general"] = _opt(
        "additive", "additive (Bahdanau/MLP), dot or general (Luong)")
    input_feeding: bool = _opt(True, "feed the previous attentional vector into the next step")
    init: Literal["bridge", "zeros"] = _opt("bridge", "initial state: learned bridge from the encoder, or zeros")
    dropout: float = _opt(0.3, "dropout between layers, and on the embeddings and before the output layer where "
                          "emb_dropout and output_dropout are null", min=0.0, max=1.0)
    emb_dropout: Optional[float] = _opt(None, "dropout on the target embeddings (null: dropout)", min=0.0, max=1.0)
    output_dropout: Optional[float] = _opt(None, "dropout on the attentional vector: the pre-output, which input "
                                           "feeding also passes on (null: dropout)", min=0.0, max=1.0)
    word_dropout: float = _opt(0.0, "share of target input positions whose whole embedding is zeroed in training "
                               "(Marian's word dropout; padding is never dropped)", min=0.0, max=1.0,
                               max_exclusive=True)
    layer_norm: bool = _opt(False, "layer-normalize the input and recurrent gate pre-activations of every cell")


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    share_embeddings: bool = _opt(False, "one embedding matrix for source and target (needs tokenizer.joint)")
    tie_embeddings: bool = _opt(False, "decoder output layer reuses the target embedding (needs emb_size == hidden_size)")
    init: Literal["xavier_uniform", "uniform"] = _opt(
        "xavier_uniform", "initialisation of weight matrices: Xavier (scaled to each layer's sizes), or uniform "
        "in [-0.1, 0.1] (which configs use which, and why: docs/configs.md)")
    rnn_init: Literal["xavier_uniform", "orthogonal"] = _opt(
        "xavier_uniform", "initialisation of recurrent (hidden-to-hidden) weights")


@dataclass(frozen=True)
class TrainingConfig:
    seed: int = _opt(1, "seed for initialisation, shuffling and dropout", min=0, max=SEED_MAX)
    device: Literal["auto", "cpu", "cuda"] = _opt("auto", "auto picks CUDA when present")
    num_threads: Optional[int] = _opt(None, "CPU threads for torch (null: as many as the machine has idle cores when the run starts, shared among the processes torchrun starts on it)", min=1,
                                    max=1024)
    optimizer: Literal["adam", "adamw", "sgd"] = _opt("adam", "optimizer")
    lr: float = _opt(1e-3, "learning rate", min=0.0, max=1e3, min_exclusive=True)
    betas: list = _opt([0.9, 0.999], "Adam/AdamW betas")
    momentum: float = _opt(0.9, "SGD momentum", min=0.0, max=1.0)
    weight_decay: float = _opt(0.0, "L2 penalty (decoupled for adamw)", min=0.0, max=1e3)
    clip_norm: Optional[float] = _opt(1.0, "gradient-norm clipping threshold, or null for none", min=0.0,
                                      max=1e9, min_exclusive=True)
    loss_normalization: Literal["tokens", "sentences"] = _opt(
        "tokens", "divide the summed loss of a batch by its target tokens or by its sentences")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy", min=0.0, max=1.0)
    ema_decay: Optional[float] = _opt(
        None, "keep an exponential moving average of the weights (Marian's exponential smoothing), updated after "
        "every update with decay min(ema_decay, (1 + n) / (10 + n)), n: updates since ema_start; validation, "
        "best.pt and the final model use it (null: off; e.g. 0.9999)", min=0.0, max=1.0, min_exclusive=True,
        max_exclusive=True)
    ema_start: int = _opt(0, "ema_decay: for this many updates the average is a copy of the weights; it starts "
                          "averaging after them", min=0, max=COUNT_MAX)
    scheduler: Literal["constant", "plateau"] = _opt("constant", "learning-rate schedule")
    plateau_factor: float = _opt(0.5, "plateau: multiply the rate by this on a plateau", min=0.0, max=1.0,
                                 min_exclusive=True)
    plateau_patience: int = _opt(2, "plateau: validations without improvement before decaying", min=0,
                               max=COUNT_MAX)
    min_lr: float = _opt(1e-6, "plateau and decay_start: lower bound of the rate", min=0.0, max=1e3)
    decay_start: Optional[int] = _opt(
        None, "after this many updates, multiply the rate by decay_factor, and again every decay_every updates, "
        "on top of the scheduler, down to min_lr (OpenNMT-py's start_decay_steps; null: off)", min=1, max=COUNT_MAX)
    decay_every: int = _opt(1000, "decay_start: updates between two decays", min=1, max=COUNT_MAX)
    decay_factor: float = _opt(0.5, "decay_start: multiply the rate by this at each decay", min=0.0, max=1.0,
                               min_exclusive=True)
    batch_tokens: Optional[int] = _opt(None, "token budget per batch: sentences * longest side (null: no budget)",
                                       min=1, max=COUNT_MAX)
    batch_size: Optional[int] = _opt(64, "maximum sentences per batch (null: only the token budget)", min=1,
                                     max=COUNT_MAX)
    accum_steps: int = _opt(1, "batches whose gradients are summed into one update", min=1,
                           max=COUNT_MAX)
    max_epochs: int = _opt(30, "stop after this many epochs", min=1, max=COUNT_MAX)
    max_steps: Optional[int] = _opt(None, "stop after this many updates (null: no limit)", min=1,
                                     max=COUNT_MAX)
    max_minutes: Optional[float] = _opt(None, "stop after this many minutes of training, validation not counted (null: no limit)", min=0.0,
                                        max=1e7, min_exclusive=True)
    valid_every: int = _opt(1000, "validate every N updates (and at the end of each epoch)", min=1,
                           max=COUNT_MAX)
    valid_at_epoch_end: bool = _opt(True, "also validate at the end of each epoch")
    log_every: int = _opt(100, "write a training line to train.log every N updates", min=1,
                         max=COUNT_MAX)
    save_every_minutes: Optional[float] = _opt(
        10.0, "also write last.pt after this many minutes of training (validation not counted) since it was "
        "last written, so a killed run loses at most that much (null: off)", min=0.0, max=1e7,
        min_exclusive=True)
    save_every_steps: Optional[int] = _opt(None, "also write last.pt every N updates (null: off)", min=1,
                                            max=COUNT_MAX)
    early_stop_metric: Literal["bleu", "chrf", "loss"] = _opt("bleu", "validation metric for best/early stopping")
    patience: Optional[int] = _opt(10, "stop after N validations without improvement (null: never)", min=1,
                                   max=COUNT_MAX)
    keep_best: int = _opt(3, "how many best checkpoints to keep besides best.pt and last.pt", min=0,
                         max=COUNT_MAX)
    average_checkpoints: Optional[int] = _opt(
        None, "at the end of training average the K best kept checkpoints into averaged.pt and validate it; "
        "when it scores at least as well as best.pt it becomes best.pt, what translate uses (null: off; "
        "needs keep_best >= K; 0 is off too)", min=0, max=COUNT_MAX)
    tensorboard: bool = _opt(False, "also log to RUN_DIR/tensorboard (needs the tensorboard package)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _opt(
        "fp32", "float type of the matrix products: fp32; bf16 or fp16 (mixed precision: weights, optimizer "
        "state, loss and checkpoints stay float32; fp16 scales the loss); auto: bf16 on a GPU that has it "
        "(else fp16) and on a CPU with AMX, fp32 elsewhere")


@dataclass(frozen=True)
class DecodingConfig:
    beam_size: int = _opt(5, "beam width for translate (1 is greedy)", min=1, max=1000)
    valid_beam_size: int = _opt(1, "beam width used for validation BLEU (1 is greedy)", min=1, max=1000)
    length_penalty: float = _opt(1.0, "GNMT length-penalty exponent alpha (0 ranks by raw log-probability)",
                                 min=0.0, max=100.0)
    max_len_ratio: float = _opt(2.0, "output pieces at most max_len_ratio * source pieces + max_len_offset",
                                min=0.0, max=1000.0)
    max_len_offset: int = _opt(10, "see max_len_ratio", min=1, max=100_000)
    batch_size: int = _opt(64, "sentences per decoding batch", min=1, max=COUNT_MAX)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _opt(
        "fp32", "float type of decoding's matrix products (translate --precision; see training.precision)")


FreezablePart = Literal["embeddings", "encoder", "decoder"]


@dataclass(frozen=True)
class FinetuneConfig:
    vocabulary: Literal["keep", "transfer", "keep_source", "keep_target"] = _opt(
        "transfer", "keep: reuse the parent's tokenizers and embeddings; transfer: train new SentencePiece "
        "models on the new data and copy the parent's rows for pieces found in both vocabularies; "
        "keep_source / keep_target: keep the parent's tokenizer and rows on that side (the language the "
        "new pair shares with the parent) and transfer the other side (each side gets its own tokenizer)")
    transfer_joint_with_parent: bool = _opt(
        False, "transfer: train the new SentencePiece models on the new data plus an equally large sample of "
        "the parent's training data (more pieces carry over; the parent's data files must exist)")
    transfer_parent_pairs: Optional[int] = _opt(
        None, "transfer_joint_with_parent: how many of the parent's pairs join the new data (null: as many "
        "as the new data has); more make the new vocabulary closer to the parent's", min=1,
        max=COUNT_MAX)
    max_unknown_chars: int = _opt(
        0, "keep, keep_source, keep_target: stop when more distinct characters of the new data than this "
        "are unknown to the parent's tokenizer of a kept side", min=0, max=COUNT_MAX)
    checkpoint: str = _opt("best.pt", "checkpoint file inside the parent run whose weights start this run")
    reset_optimizer: bool = _opt(True, "fresh optimizer state (false: continue the parent's, from its last.pt)")
    reset_schedule: bool = _opt(True, "start at training.lr with a fresh schedule (false: continue the parent's "
                                "learning rate and plateau counters, from its last.pt)")
    reset_step: bool = _opt(True, "count updates from 0 (false: continue the parent's step count)")
    reset_early_stopping: bool = _opt(True, "forget the parent's best score (false: the new run must beat it)")
    freeze: list[FreezablePart] = _opt([], "parts whose weights stay fixed: any of embeddings (source and "
                                       "target embedding matrices), encoder, decoder (with its output layer)")
    new_pieces: Literal["fresh", "spelled"] = _opt(
        "fresh", "rows of pieces the parent's vocabulary lacks: fresh leaves them at their random "
        "initialisation; spelled starts each from the mean of the parent's rows for the pieces the parent's "
        "tokenizer cuts its text into (when it pays: docs/finetuning.md)")
    warmup_steps: int = _opt(
        0, "train only the embeddings and output layer for this many updates, then everything (freeze still "
        "holds); needs reset_step: true", min=0, max=COUNT_MAX)


@dataclass(frozen=True)
class Config:
    init_from: Optional[str] = _opt(None, "a run directory to fine-tune from (its weights start this run; "
                                    "the model section may be omitted and is inherited), or null")
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
