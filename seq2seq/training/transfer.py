"""Weights from a parent model into a child whose vocabularies may differ: rows of pieces that
both vocabularies hold are copied (matched by piece string, side by side: the encoder against
the parent's source vocabulary, the decoder against its target vocabulary), a piece the parent
lacks can start from the mean of the rows of the parent pieces that spell it, every other
weight is the parent's, and chosen parts can be frozen."""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from seq2seq.run.checkpoint import unwrap
from seq2seq.errors import ConfigError
from seq2seq.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Weights whose rows follow a vocabulary, and which side's vocabulary.
VOCAB_ROWS = {"encoder.embed.weight": "source", "decoder.embed.weight": "target",
              "decoder.output.weight": "target", "decoder.output.bias": "target"}

RowMaps = dict[str, tuple[torch.Tensor, torch.Tensor]]  # side -> (child ids, parent ids)
Spellings = dict[str, dict[int, list[int]]]  # side -> {child id: parent ids whose rows it averages}

# SentencePiece's word-start mark: a piece "▁Haus" is the text " Haus".
WORD_START = "\u2581"


def shared_pieces(child: Tokenizer, parent: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of the pieces both vocabularies hold: (child ids, parent ids), matched by piece string."""
    parent_ids = {parent.id_to_piece(i): i for i in range(len(parent))}
    pairs = [(i, parent_ids[p]) for i in range(len(child)) if (p := child.id_to_piece(i)) in parent_ids]
    child_idx, parent_idx = zip(*pairs) if pairs else ((), ())
    return torch.tensor(child_idx, dtype=torch.long), torch.tensor(parent_idx, dtype=torch.long)


def spelled_pieces(child: Tokenizer, parent: Tokenizer, carried: torch.Tensor) -> dict[int, list[int]]:
    """For each child piece outside `carried` (the child ids shared_pieces matched), the parent
    pieces that the parent's tokenizer cuts its text into, unknown characters left out. A piece
    none of whose characters the parent knows is absent (it keeps its fresh initialisation)."""
    have = set(carried.tolist())
    unk = parent.sp.unk_id()
    out = {}
    for i in range(len(child)):
        if i in have:
            continue
        piece = child.id_to_piece(i)
        ids = parent.encode(piece.replace(WORD_START, " "))
        if not piece.startswith(WORD_START) and ids and parent.id_to_piece(ids[0]) == WORD_START:
            ids = ids[1:]  # the tokenizer marks a word start that a word-inside piece does not have
        ids = [j for j in ids if j != unk]
        # A bare word-start mark says nothing of the piece's text: such a piece stays fresh.
        if any(parent.id_to_piece(j) != WORD_START for j in ids):
            out[i] = ids
    return out


def _spelled_rows(current: torch.Tensor, old: torch.Tensor, spellings: dict[int, list[int]]) -> torch.Tensor:
    out = current.clone()
    for child_id, parent_ids in spellings.items():
        out[child_id] = old[parent_ids].mean(dim=0).to(out.device, out.dtype)
    return out


def _copy_rows(current: torch.Tensor, old: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    child_idx, parent_idx = rows
    out = current.clone()
    out[child_idx.to(out.device)] = old[parent_idx].to(out.device, out.dtype)
    return out


def transfer_weights(model: torch.nn.Module, parent_weights: dict[str, torch.Tensor], maps: RowMaps,
                     spellings: Spellings | None = None) -> None:
    """Copy every parent weight into `model`; vocabulary-shaped weights only at the mapped rows
    and, with `spellings`, as the mean of the spelling pieces' rows for the pieces it lists,
    keeping the model's own values elsewhere."""
    model = unwrap(model)
    new = {}
    for name, current in model.state_dict().items():
        if name not in parent_weights:
            raise ConfigError(f"init_from: the parent's checkpoint has no weight {name}; is it an older format?")
        old = parent_weights[name]
        side = VOCAB_ROWS.get(name)
        if side is not None:
            new[name] = _copy_rows(current, old, maps[side])
            if spellings:
                new[name] = _spelled_rows(new[name], old, spellings[side])
        elif old.shape != current.shape:
            raise ConfigError(f"init_from: the parent's {name} has shape {tuple(old.shape)}, this model "
                              f"needs {tuple(current.shape)}; the architectures differ")
        else:
            new[name] = old
    model.load_state_dict(new)


def map_optimizer_state(model: torch.nn.Module, saved: dict, parent_freeze: Sequence[str],
                        maps: RowMaps) -> dict[int, dict]:
    """The parent's optimizer state (saved["state"], indexed by position among the parent's
    trainable parameters) re-indexed by position among `model`'s trainable parameters, with the
    vocabulary rows mapped like the weights (new rows start at zero). The architecture is the
    same, so names line up once the parent's own freezing is applied."""
    model = unwrap(model)
    parent_frozen = frozen_names(model, parent_freeze)
    parent_order = [n for n, _ in model.named_parameters() if n not in parent_frozen]
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    state = {}
    for index, (name, p) in enumerate(trainable):
        old = saved["state"].get(parent_order.index(name)) if name in parent_order else None
        if not old:
            continue
        side = VOCAB_ROWS.get(name)
        new = {}
        for k, v in old.items():
            if side is not None and torch.is_tensor(v) and v.dim() > 0:
                new[k] = _copy_rows(torch.zeros_like(p, memory_format=torch.preserve_format), v, maps[side])
            else:
                new[k] = v
        state[index] = new
    return state


def frozen_names(model: torch.nn.Module, parts: Sequence[str]) -> set[str]:
    """Names (as in named_parameters) of the parameters that `parts` freeze."""
    model = unwrap(model)
    prefixes = {"embeddings": ("encoder.embed.", "decoder.embed."), "encoder": ("encoder.",),
                "decoder": ("decoder.",)}
    chosen = tuple(p for part in parts for p in prefixes[part])
    # Shared or tied tensors count as frozen when any of their names is.
    frozen_ids = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n.startswith(chosen)}
    return {n for n, p in model.named_parameters() if id(p) in frozen_ids}


def warmup_held(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters that finetune.warmup_steps holds still: all but the embeddings and
    the output layer (the weights whose rows follow a vocabulary)."""
    model = unwrap(model)
    moving = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in VOCAB_ROWS}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in moving]


def freeze(model: torch.nn.Module, parts: Sequence[str]) -> None:
    """Stop gradients for the chosen parts (embeddings, encoder, decoder)."""
    if not parts:
        return
    names = frozen_names(model, parts)
    total = trainable = 0
    for name, p in unwrap(model).named_parameters():
        p.requires_grad_(name not in names)
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    log.info("frozen: %s; %s of %s parameters trainable", ", ".join(parts), f"{trainable:,}", f"{total:,}")


class VocabularyWarmup:
    """finetune.warmup_steps: a child run's first updates train only the embeddings and the
    output layer (the rows that follow a new vocabulary); everything else is held still, then
    everything trains."""

    def __init__(self, model: torch.nn.Module, *, steps: int, step: int):
        self.steps = steps
        self.params = warmup_held(model) if step < steps else []
        if self.params:
            log.info("finetune.warmup_steps: updates %d-%d train only the embeddings and output layer (%s "
                     "parameters held still)", step + 1, steps, f"{sum(x.numel() for x in self.params):,}")

    def held(self, step: int) -> Sequence[torch.nn.Parameter]:
        """The parameters the update after `step` updates holds still."""
        return self.params if step < self.steps else ()

    def after_update(self, step: int) -> None:
        if step == self.steps:
            log.info("finetune.warmup_steps: warm-up over after %d updates; all trainable weights train now",
                     self.steps)
