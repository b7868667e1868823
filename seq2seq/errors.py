"""The errors a user can cause and fix. Every module raises these; the CLI prints the message of
any UserError on one line and exits with status 2 (130 for Interrupted). Anything else that
reaches the CLI is a bug and keeps its traceback, except running out of memory
(`is_out_of_memory`), which is one line saying what to make smaller.

Each class is also a ValueError or RuntimeError, so code that caught those still catches them.
This module imports nothing of ours and not torch: config.py and every other module may use it.
"""
from __future__ import annotations

import sys


class UserError(Exception):
    """Something the user can fix; the message says what and where, in one line."""


class ConfigError(UserError, ValueError):
    """A user error in a config file or a --set override; the message names the key."""


class DataError(UserError, ValueError):
    """A problem with the user's data; the message names the file (and line)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or run directory that cannot be used; the message names the file and the reason."""


class DeviceError(UserError, ValueError):
    """The device asked for is not there, or cannot run what was asked (e.g. --device cuda
    without a GPU, int8 quantization on a GPU); the message says which device to use instead."""


class DecodingError(UserError, ValueError):
    """Decoding options that are unknown or do not go together (e.g. --quantize int8 with
    --precision bf16); the message names the option."""


class TrainingError(UserError, RuntimeError):
    """Training cannot go on; the message says why and what is saved."""


class ExportError(UserError, ValueError):
    """A model that cannot be exported, or an export that failed its own check against PyTorch;
    the message names the part and by how much it differs."""


class PlotError(UserError, ValueError):
    """A picture cannot be drawn; the message says why (e.g. matplotlib is missing)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped training after `last.pt` was saved."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocator giving up: Python's MemoryError, torch's CUDA
    OutOfMemoryError, or the RuntimeError other torch allocators raise ("out of memory", or the
    CPU allocator's "can't allocate memory"). The one test for it: the trainer's retry in
    halves and the CLI's message both ask here."""
    if isinstance(error, MemoryError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    torch = sys.modules.get("torch")  # an error of torch's own type needs torch loaded already
    if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return "out of memory" in text.lower() or "can't allocate memory" in text


def out_of_memory_message(error: BaseException, *, decoding: bool) -> str:
    """One line for an `is_out_of_memory` error: what ran out, and what to make smaller when
    training (`decoding=False`) or decoding (translate, serve)."""
    text = str(error).strip()
    first = (text.splitlines()[0] if text else type(error).__name__)[:200]
    if decoding:
        change = "decode smaller batches (--batch-size, decoding.batch_size) or with a narrower beam (--beam-size)"
    else:
        change = ("make the batches smaller (training.batch_tokens, training.batch_size; decoding.batch_size for "
                  "validation) or the model (model.encoder/decoder hidden_size and emb_size, tokenizer.vocab_size)")
    return f"out of memory ({first}); {change}"
