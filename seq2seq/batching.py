"""Dynamic batching for a service: requests that arrive together are decoded together.

One worker thread owns the model. It takes the first waiting request, then keeps taking
requests until `max_batch` sentences are gathered or `max_wait` seconds have passed, decodes
each group of requests that share decoding options as one batch (the translator sorts and
pads by length inside it), and hands every request its own translations, in its own order.
Decoding one sentence costs nearly as much as decoding a batch of them on a CPU, so many
clients sending one sentence each get close to the throughput of translating a file.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple

from .translator import Translation, Translator


class Options(NamedTuple):
    """Decoding options that must be equal within one batch."""
    beam_size: int
    nbest: int
    attention: bool


@dataclass
class Job:
    texts: list[str]
    options: Options
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    def __init__(self, translator: Translator, *, max_batch: int = 64, max_wait: float = 0.005):
        self.translator, self.max_batch, self.max_wait = translator, max_batch, max_wait
        self.batches = self.sentences = 0  # what the worker has decoded (for /info and tests)
        self._waiting: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="seq2seq-batcher", daemon=True)
        self._worker.start()

    def submit(self, texts: list[str], options: Options) -> Future:
        """Queue `texts` for decoding; the future gives one list of Translations (best first) per text."""
        job = Job(list(texts), options)
        self._waiting.put(job)
        return job.future

    def close(self) -> None:
        """Decode everything already submitted, then stop the worker."""
        self._waiting.put(_STOP)
        self._worker.join()

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        jobs, count = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            try:
                job = self._waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
            count += len(job.texts)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._waiting.get()
            if first is _STOP:
                break
            jobs, stop = self._gather(first)
            groups: dict[Options, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.options, []).append(job)
            for options, group in groups.items():
                self._decode(options, group)

    def _decode(self, options: Options, jobs: list[Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            results = self.translator.translate_detailed(texts, nbest=options.nbest, beam_size=options.beam_size,
                                                         return_attention=options.attention)
        except Exception as e:  # every waiting request hears of it; the worker goes on
            for job in jobs:
                job.future.set_exception(e)
            return
        self.batches += 1
        self.sentences += len(texts)
        start = 0
        for job in jobs:
            job.future.set_result(results[start:start + len(job.texts)])
            start += len(job.texts)


def as_dict(hyps: list[Translation], attention: bool) -> dict:
    """One input's answer: the best text and score, the n-best list, and optionally attention."""
    best = hyps[0]
    out = {"text": best.text, "score": round(best.score, 4),
           "nbest": [{"text": h.text, "score": round(h.score, 4)} for h in hyps]}
    if attention and best.attention is not None:
        out["attention"] = {"source": best.src_pieces, "target": best.tgt_pieces + ["</s>"],
                            "weights": [[round(float(w), 4) for w in row] for row in best.attention]}
    return out
