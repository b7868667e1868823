"""Dynamic batching for a service: requests that arrive together are decoded together.

One worker thread owns the model. It takes the first waiting request, then keeps taking
requests until `max_batch` sentences are gathered or `max_wait` seconds have passed, decodes
each group of requests that share decoding options (the translator sorts and pads by length
inside a call), and hands every request its own translations, in its own order. Decoding one
sentence costs nearly as much as decoding a batch of them on a CPU, so many clients sending one
sentence each get close to the throughput of translating a file.

Under overload it sheds work instead of stalling: the queue is bounded (by waiting sentences,
and by the wait it expects from its measured decoding speed), and a request beyond it is
refused at once (Overloaded, with a time to come back); a request whose client went away
(`abandon`) or whose deadline passed is dropped before it is decoded, and between the calls
that decode a large request; `stop` (SIGTERM) refuses everything waiting and finishes only the
requests already taken.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import NamedTuple

from seq2seq.decoding.translator import Translation, Translator


class Options(NamedTuple):
    """Decoding options that must be equal within one batch."""
    beam_size: int
    nbest: int
    attention: bool


class Overloaded(Exception):
    """The queue is full; `retry_after` is about when it will have room (seconds)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Expired(Exception):
    """A request was not decoded before its deadline; its work is dropped."""


class ShuttingDown(Exception):
    """The service is stopping: requests still waiting are refused."""


class Job(Future):
    """One request: its texts and options, and the future of its translations (one list each)."""

    def __init__(self, texts: list[str], options: Options, deadline: float | None):
        super().__init__()
        self.texts, self.options, self.deadline = texts, options, deadline
        self.state = "queued"  # then "taken" (by the worker), "abandoned" or "refused"
        self.results: list = [None] * len(texts)
        self.left = len(texts)

    @property
    def cost(self) -> int:
        """Decoding work in sentence-beams: a beam of 16 costs about 16 times a greedy sentence."""
        return len(self.texts) * self.options.beam_size

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline


_STOP = object()  # put in the queue by stop(): the worker ends


class Batcher:
    def __init__(self, translator: Translator, *, max_batch: int = 64, max_wait: float = 0.005,
                 max_queue: int | None = None, max_queue_wait: float | None = None, beam_size: int | None = None):
        """`max_queue`: most sentences waiting; `max_queue_wait`: most seconds of expected wait
        (None: no bound). One decoding call holds at most `max_batch` sentences, and with
        `beam_size` (the usual beam) at most `max_batch * beam_size` sentence-beams, so a request
        at a wider beam is decoded in smaller calls and each call ends soon."""
        self.translator, self.max_batch, self.max_wait = translator, max_batch, max_wait
        self.max_queue, self.max_queue_wait, self.beam_size = max_queue, max_queue_wait, beam_size
        self.batches = self.sentences = 0  # what the worker has decoded (for /info and tests)
        self.refused = self.dropped = self.expired = 0
        self.stopping = False  # set by stop()
        self._lock = threading.Lock()
        self._queued = self._queued_cost = 0  # sentences and sentence-beams waiting
        self._in_progress = self._in_progress_cost = 0  # taken by the worker, not yet decoded
        self._seconds_per_cost: float | None = None  # measured; None until the first call
        self._closed = False
        self._waiting: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="seq2seq-batcher", daemon=True)
        self._worker.start()

    # -- the clients' side ------------------------------------------------------------------

    def submit(self, texts: list[str], options: Options, *, timeout: float | None = None) -> Job:
        """Queue `texts`; the returned future gives one list of Translations (best first) per
        text. Overloaded when the queue is full, ShuttingDown after stop()."""
        if self.stopping or self._closed:
            raise ShuttingDown("the service is shutting down")
        job = Job(list(texts), options, None if timeout is None else time.monotonic() + timeout)
        with self._lock:
            if self._queued:  # a request always gets in when nothing waits
                wait = self._wait_for(self._queued_cost + self._in_progress_cost + job.cost)
                full = self.max_queue is not None and self._queued + len(job.texts) > self.max_queue
                slow = self.max_queue_wait is not None and wait is not None and wait > self.max_queue_wait
                if full or slow:
                    self.refused += 1
                    retry = _retry_after(wait, self.max_queue_wait)
                    why = (f"{self._queued} sentences are waiting (at most {self.max_queue})" if full else
                           f"the expected wait is {wait:.1f} s (at most {self.max_queue_wait:g} s)")
                    raise Overloaded(f"the service is busy: {why}; retry in {retry} s", retry)
            self._queued += len(job.texts)
            self._queued_cost += job.cost
        self._waiting.put(job)
        return job

    def abandon(self, job: Job) -> None:
        """The client of `job` went away (or gave up): drop its work. Waiting, it frees its place
        in the queue at once; being decoded, it is dropped before the next call."""
        with self._lock:
            if job.state == "queued":
                job.state = "abandoned"
                self._queued -= len(job.texts)
                self._queued_cost -= job.cost
                self.dropped += 1
            elif job.state == "taken" and not job.done():
                job.state = "abandoned"
                self.dropped += 1
        job.cancel()  # never running (the worker does not mark it so): it is done from now on

    def expected_wait(self) -> float:
        """Seconds until everything waiting and in progress is decoded, by the measured speed."""
        with self._lock:
            return self._wait_for(self._queued_cost + self._in_progress_cost) or 0.0

    def counts(self) -> dict:
        """The queue and what became of requests (for /info and the tests)."""
        with self._lock:
            return {"queued_sentences": self._queued, "in_progress_sentences": self._in_progress,
                    "expected_wait_s": round(self._wait_for(self._queued_cost + self._in_progress_cost) or 0.0, 3),
                    "refused": self.refused, "dropped": self.dropped, "expired": self.expired}

    def stop(self) -> None:
        """Refuse new requests and, at once, everything waiting (ShuttingDown); the worker
        finishes the requests it has taken, then ends."""
        self.stopping = True
        while (job := self._next(0.0)) is not None:
            if job is not _STOP:
                self._take(job)  # refused: stopping is set
        self._waiting.put(_STOP)

    def close(self, timeout: float | None = None) -> None:
        """stop(), then wait (at most `timeout` seconds) for the worker to finish what it took."""
        if not self.stopping:
            self.stop()
        self._closed = True
        self._worker.join(timeout)

    # -- the worker -------------------------------------------------------------------------

    def _wait_for(self, cost: int) -> float | None:
        return None if self._seconds_per_cost is None else cost * self._seconds_per_cost

    def _next(self, timeout: float) -> Job | None:
        try:
            return self._waiting.get(timeout=timeout)
        except queue.Empty:
            return None

    def _take(self, job: Job) -> bool:
        """Move `job` from the queue to the work in progress; False when it is not to be decoded."""
        with self._lock:
            if job.state != "queued":
                return False
            self._queued -= len(job.texts)
            self._queued_cost -= job.cost
            if self.stopping:
                job.state = "refused"
            elif job.expired(time.monotonic()):
                job.state = "expired"
                self.expired += 1
            else:
                job.state = "taken"
                self._in_progress += len(job.texts)
                self._in_progress_cost += job.cost
                return True
        _settle(job, error=ShuttingDown("the service is shutting down") if job.state == "refused"
                else Expired("not decoded before its deadline"))
        return False

    def _gather(self, first: Job) -> list[Job]:
        jobs = [first] if self._take(first) else []
        count = len(first.texts) if jobs else 0
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            job = self._next(max(0.0, deadline - time.monotonic()))
            if job is None or job is _STOP:
                break
            if self._take(job):
                jobs.append(job)
                count += len(job.texts)
        return jobs

    def _run(self) -> None:
        while not self.stopping:
            first = self._waiting.get()
            if first is _STOP:
                break
            jobs = self._gather(first)
            groups: dict[Options, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.options, []).append(job)
            for options, group in groups.items():
                self._decode(options, group)

    def _call_size(self, beam_size: int) -> int:
        """Sentences per decoding call at this beam."""
        if self.beam_size is None:
            return self.max_batch
        return max(1, min(self.max_batch, self.max_batch * self.beam_size // beam_size))

    def _decode(self, options: Options, jobs: list[Job]) -> None:
        """Decode the sentences of `jobs` in calls of _call_size sentences, answering each job as
        soon as its last sentence is done; jobs abandoned or past their deadline are dropped
        before each call."""
        pending = [(job, i) for job in jobs for i in range(len(job.texts))]
        size = self._call_size(options.beam_size)
        while pending:
            now = time.monotonic()
            for job in jobs:
                if job.expired(now) and _settle(job, error=Expired("not decoded before its deadline")):
                    with self._lock:
                        self.expired += 1
            kept = [(job, i) for job, i in pending if not job.done()]
            self._forget(len(pending) - len(kept), options.beam_size)
            call, pending = kept[:size], kept[size:]
            if not call:
                break
            texts = [job.texts[i] for job, i in call]
            start = time.perf_counter()
            try:
                results = self.translator.translate_detailed(texts, nbest=options.nbest, beam_size=options.beam_size,
                                                             return_attention=options.attention)
            except Exception as e:  # every request of this call hears of it; the worker goes on
                self._forget(len(call), options.beam_size)
                for job, _ in call:
                    _settle(job, error=e)
                continue
            measured = (time.perf_counter() - start) / (len(texts) * options.beam_size)
            self._forget(len(call), options.beam_size)
            with self._lock:
                self.batches += 1
                self.sentences += len(texts)
                old = self._seconds_per_cost
                self._seconds_per_cost = measured if old is None else 0.7 * old + 0.3 * measured
            for (job, i), hyps in zip(call, results):
                job.results[i] = hyps
                job.left -= 1
                if job.left == 0:
                    _settle(job, result=job.results)

    def _forget(self, sentences: int, beam_size: int) -> None:
        """Take `sentences` (decoded, or dropped) out of the work in progress."""
        with self._lock:
            self._in_progress -= sentences
            self._in_progress_cost -= sentences * beam_size


RETRY_AFTER_MAX = 5  # seconds: clients that give up leave the queue early, so it frees up sooner than estimated


def _retry_after(wait: float | None, bound: float | None) -> int:
    """Seconds a refused client should wait: until the expected wait is back under `bound`."""
    excess = (wait or 0.0) - (bound or 0.0)
    return min(RETRY_AFTER_MAX, max(1, math.ceil(excess)))


def _settle(job: Job, *, result=None, error: BaseException | None = None) -> bool:
    """Answer `job` unless it is answered already (its client may abandon it at any moment)."""
    try:
        job.set_exception(error) if error is not None else job.set_result(result)
        return True
    except InvalidStateError:
        return False


def as_dict(hyps: list[Translation], attention: bool) -> dict:
    """One input's answer: the best text and score, the n-best list, and optionally attention."""
    best = hyps[0]
    out = {"text": best.text, "score": round(best.score, 4),
           "nbest": [{"text": h.text, "score": round(h.score, 4)} for h in hyps]}
    if attention and best.attention is not None:
        out["attention"] = {"source": best.src_pieces, "target": best.tgt_pieces + ["</s>"],
                            "weights": [[round(float(w), 4) for w in row] for row in best.attention]}
    return out
