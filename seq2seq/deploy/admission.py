"""How much decoding is ahead of a new request, in seconds: what the service's admission weighs.

Work is counted in units that grow with what decoding costs: a sentence of n characters at beam
b is b * (1 + n / CHARS_PER_UNIT) units (about one unit per target piece and beam, its end
included), so 64 long sentences at beam 16 weigh what they cost, not what 64 short greedy ones
do. The speed (seconds per unit) comes from a decode of a few made-up sentences at start-up
(`calibrate`), until the first real decoding call measures it; it then follows the calls.

The work ahead of a request is what waits in the queue plus what remains of the work in
progress: the part of the running call not yet covered by its elapsed time, and the sentences
the worker has taken but not yet started. A request that arrives while a long batch runs and
nothing waits is weighed against that batch.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Sequence

from seq2seq.data.tokenizer import Tokenizer
from seq2seq.decoding.translator import Translator

log = logging.getLogger(__name__)

CHARS_PER_UNIT = 4  # about one SentencePiece piece: the cost of a sentence grows with its length
RETRY_AFTER_MAX = 5  # seconds: clients that give up leave the queue early, so it frees up sooner than estimated


def work(texts: Sequence[str], beam_size: int) -> float:
    """The decoding work of `texts` at `beam_size`, in units (see the module's docstring)."""
    return beam_size * sum(1 + len(text) / CHARS_PER_UNIT for text in texts)


class Workload:
    """The work queued and in progress, and the speed it is priced at. Not thread-safe: the
    batcher calls it under its lock. Times are time.monotonic() seconds."""

    def __init__(self, seconds_per_unit: float | None = None):
        """`seconds_per_unit`: the start-up estimate; None: no estimate until a call is measured."""
        self.seconds_per_unit = seconds_per_unit
        self.source = "start-up estimate" if seconds_per_unit is not None else "none yet"
        self.queued = 0.0       # units waiting in the queue
        self.in_progress = 0.0  # units taken by the worker and not yet decoded (the running call's included)
        self.call = 0.0         # units of the running call
        self.call_start: float | None = None

    def start_call(self, units: float, now: float) -> None:
        """A decoding call of `units` (already counted in `in_progress`) starts at `now`."""
        self.call, self.call_start = units, now

    def end_call(self, seconds: float | None) -> None:
        """The running call ended; `seconds` is its time when it decoded all its work (None when
        it failed or was cut short: that time says nothing about the speed)."""
        if seconds is not None and self.call > 0:
            measured = seconds / self.call
            # The first measurement replaces the start-up estimate (made on a cold model with
            # made-up sentences); later ones are smoothed so one odd call does not swing admission.
            old = self.seconds_per_unit if self.source == "measured" else None
            self.seconds_per_unit = measured if old is None else 0.7 * old + 0.3 * measured
            self.source = "measured"
        self.call, self.call_start = 0.0, None

    def seconds_ahead(self, now: float) -> float | None:
        """Seconds until the queued work and the work in progress are decoded; None without a speed."""
        speed = self.seconds_per_unit
        if speed is None:
            return None
        running = 0.0
        if self.call_start is not None:
            # A call that runs past its estimate counts as ending now; its true speed is learnt when it ends.
            running = max(0.0, self.call * speed - (now - self.call_start))
        return (self.queued + self.in_progress - self.call) * speed + running


def retry_after(wait: float | None, bound: float | None) -> int:
    """Seconds a refused client should wait: until the expected wait is back under `bound`."""
    excess = (wait or 0.0) - (bound or 0.0)
    return min(RETRY_AFTER_MAX, max(1, math.ceil(excess)))


def calibration_texts(tok: Tokenizer, *, sentences: int = 8, pieces: int = 24) -> list[str]:
    """Made-up source sentences of `pieces` pieces each, from the source vocabulary (ids above
    the four specials), so that calibration needs no data file."""
    ordinary = max(1, len(tok) - 4)
    return [tok.decode([4 + (7 * (s * pieces + i)) % ordinary for i in range(pieces)]) for s in range(sentences)]


def calibrate(translator: Translator, beam_size: int) -> float | None:
    """Seconds per unit of work, from one decode of calibration_texts at `beam_size` (it also
    warms the model up, so the first request does not pay for that). None when it fails: the
    wait is then unbounded until a real call is measured. A cold first call is slower than later
    ones, so the estimate errs on the side of refusing."""
    try:
        texts = calibration_texts(translator.src_tok)
        start = time.perf_counter()
        translator.translate_detailed(texts, beam_size=beam_size)
        seconds = time.perf_counter() - start
    except Exception as e:  # the service still works; admission waits for a measured call
        log.warning("start-up calibration of the decoding speed failed (%s: %s)", type(e).__name__, e)
        return None
    log.info("decoding speed at start-up: %.2g s per unit of work (beam %d)", seconds / work(texts, beam_size),
             beam_size)
    return seconds / work(texts, beam_size)
