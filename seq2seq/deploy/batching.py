"""Dynamic batching for a service: requests that arrive together are decoded together.

One worker thread owns the model. It takes the first waiting request, then keeps taking
requests until `max_batch` sentences are gathered or `max_wait` seconds have passed, decodes
each group of requests that share decoding options (the translator sorts and pads by length
inside a call), and hands every request its own translations, in its own order. Decoding one
sentence costs nearly as much as decoding a batch of them on a CPU, so many clients sending one
sentence each get close to the throughput of translating a file.

Under overload it sheds work instead of stalling. Admission (admission.py) bounds the queue by
waiting sentences and by the seconds of work ahead of a request (the queue and what remains of
the work in progress), and refuses beyond them at once (Overloaded, with a time to come back).
Work nobody waits for stops: a request whose client went away (`abandon`) or whose deadline
passed is dropped before it is decoded, and a decoding call whose every sentence belongs to
such requests is cut short within a step of the search (its `cancelled` hook). `stop(grace)`
(SIGTERM) refuses new requests, decodes what was accepted for at most `grace` seconds, then
refuses what is left. A worker that dies of an unexpected error answers every request it holds
(WorkerDied) and `health()` says so.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Iterable, NamedTuple

from seq2seq.deploy.admission import Workload, retry_after, work
from seq2seq.decoding.translator import Translation, Translator

log = logging.getLogger(__name__)


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
    """The service is stopping: new requests, and accepted ones left when the grace ran out, are refused."""


class WorkerDied(Exception):
    """The decoding worker ended on an unexpected error: nothing can be decoded any more."""


class Job(Future):
    """One request: its texts and options, and the future of its translations (one list each)."""

    def __init__(self, texts: list[str], options: Options, deadline: float | None):
        super().__init__()
        self.texts, self.options, self.deadline = texts, options, deadline
        self.state = "queued"  # then "taken" (by the worker), "abandoned", "expired" or "refused"
        self.results: list = [None] * len(texts)
        self.left = len(texts)
        self.units = work(texts, options.beam_size)  # its decoding work (admission.py)

    def unit(self, i: int) -> float:
        """The work of its sentence `i`."""
        return work([self.texts[i]], self.options.beam_size)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline


_STOP = object()  # put in the queue by stop() after every accepted request: the worker ends there


class Batcher:
    def __init__(self, translator: Translator, *, max_batch: int = 64, max_wait: float = 0.005,
                 max_queue: int | None = None, max_queue_wait: float | None = None, beam_size: int | None = None,
                 seconds_per_unit: float | None = None):
        """`max_queue`: most sentences waiting; `max_queue_wait`: most seconds of work ahead of a
        new request (None: no bound), priced at `seconds_per_unit` (a start-up estimate, see
        admission.calibrate; None: unbounded until a call is measured) and then at the measured
        speed. One decoding call holds at most `max_batch` sentences, and with `beam_size` (the
        usual beam) at most `max_batch * beam_size` sentence-beams, so a request at a wider beam
        is decoded in smaller calls."""
        self.translator, self.max_batch, self.max_wait = translator, max_batch, max_wait
        self.max_queue, self.max_queue_wait, self.beam_size = max_queue, max_queue_wait, beam_size
        self.batches = self.sentences = 0  # what the worker has decoded (for /info and tests)
        self.accepted = self.refused = self.dropped = self.expired = self.cut_short = 0
        self.stopping = False  # stop(): no new requests
        self.aborting = False  # the grace is over: what is left is refused, the running call cut short
        self.failure: str | None = None  # why the worker died
        self._lock = threading.Lock()
        self._queued = self._in_progress = 0  # sentences waiting; taken by the worker, not yet decoded
        self._load = Workload(seconds_per_unit)
        self._current: list[Job] = []  # the jobs the worker holds
        self._timer: threading.Timer | None = None
        self._waiting: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="seq2seq-batcher", daemon=True)
        self._worker.start()

    # -- the clients' side ------------------------------------------------------------------

    def submit(self, texts: list[str], options: Options, *, timeout: float | None = None) -> Job:
        """Queue `texts`; the returned future gives one list of Translations (best first) per
        text. Overloaded when the queue is full, ShuttingDown after stop(), WorkerDied."""
        job = Job(list(texts), options, None if timeout is None else time.monotonic() + timeout)
        if not job.texts:  # nothing to decode: answered at once, never queued
            job.set_result([])
            return job
        with self._lock:
            self._admit(job)
            self._queued += len(job.texts)
            self._load.queued += job.units
            self.accepted += 1
            # Under the lock: stop() and a dying worker see every job put before they change state.
            self._waiting.put(job)
        return job

    def _admit(self, job: Job) -> None:
        """Raise why `job` may not be queued now (called under the lock)."""
        if self.failure is not None:
            raise WorkerDied(f"the decoding worker has died ({self.failure})")
        if self.stopping:
            raise ShuttingDown("the service is shutting down")
        ahead = self._load.seconds_ahead(time.monotonic())
        full = self.max_queue is not None and self._queued > 0 and self._queued + len(job.texts) > self.max_queue
        slow = self.max_queue_wait is not None and ahead is not None and ahead > self.max_queue_wait
        if full or slow:
            self.refused += 1
            retry = retry_after(ahead, self.max_queue_wait)
            why = (f"{self._queued} sentences are waiting (at most {self.max_queue})" if full else
                   f"the expected wait is {ahead:.1f} s (at most {self.max_queue_wait:g} s)")
            raise Overloaded(f"the service is busy: {why}; retry in {retry} s", retry)

    def abandon(self, job: Job) -> None:
        """The client of `job` went away (or gave up): drop its work. Waiting, it frees its place
        in the queue at once; being decoded, its call is cut short when no one else's work is in it."""
        with self._lock:
            if job.state == "queued":
                job.state = "abandoned"
                self._queued -= len(job.texts)
                self._load.queued -= job.units
                self.dropped += 1
            elif job.state == "taken" and not job.done():
                job.state = "abandoned"
                self.dropped += 1
        job.cancel()  # never running (the worker does not mark it so): it is done from now on

    def expected_wait(self) -> float:
        """Seconds until everything waiting and in progress is decoded, at the current speed."""
        with self._lock:
            return self._load.seconds_ahead(time.monotonic()) or 0.0

    def counts(self) -> dict:
        """The queue, the speed and what became of requests (for /info and the tests)."""
        with self._lock:
            return {"queued_sentences": self._queued, "in_progress_sentences": self._in_progress,
                    "expected_wait_s": round(self._load.seconds_ahead(time.monotonic()) or 0.0, 3),
                    "seconds_per_unit": self._load.seconds_per_unit, "speed_from": self._load.source,
                    "accepted": self.accepted, "refused": self.refused, "dropped": self.dropped,
                    "expired": self.expired, "cut_short": self.cut_short}

    def health(self) -> str | None:
        """Why requests cannot be decoded now (None: they can)."""
        if self.failure is not None:
            return f"the decoding worker has died ({self.failure}); restart the service"
        if self.stopping:
            return "the service is shutting down"
        if not self._worker.is_alive():
            return "the decoding worker has stopped"
        return None

    def stop(self, grace: float = 0.0) -> None:
        """Refuse new requests (ShuttingDown); decode those accepted for at most `grace` seconds,
        then abort(). The worker ends once nothing accepted is left."""
        with self._lock:
            first = not self.stopping
            self.stopping = True
            if first:
                self._waiting.put(_STOP)  # behind every accepted request
        if grace <= 0:
            self.abort()
        elif first:
            self._timer = threading.Timer(grace, self.abort)
            self._timer.daemon = True
            self._timer.start()

    def abort(self) -> None:
        """Refuse everything waiting (ShuttingDown) and cut the running call short."""
        with self._lock:
            self.stopping = self.aborting = True
        self._refuse_waiting()
        self._waiting.put(_STOP)

    def close(self, timeout: float | None = None) -> None:
        """abort(), then wait (at most `timeout` seconds) for the worker to end."""
        self.abort()
        if self._timer is not None:
            self._timer.cancel()
        self._worker.join(timeout)

    # -- the worker -------------------------------------------------------------------------

    def _next(self, timeout: float):
        try:
            return self._waiting.get(timeout=timeout)
        except queue.Empty:
            return None

    def _refuse_waiting(self) -> None:
        """Answer every job in the queue now (refused: aborting is set, or the worker died)."""
        while (job := self._next(0.0)) is not None:
            if job is not _STOP:
                self._take(job)

    def _take(self, job: Job) -> bool:
        """Move `job` from the queue to the work in progress; False when it is not to be decoded."""
        with self._lock:
            if job.state != "queued":
                return False
            self._queued -= len(job.texts)
            self._load.queued -= job.units
            if self.failure is not None or self.aborting:
                job.state = "refused"
            elif job.expired(time.monotonic()):
                job.state = "expired"
                self.expired += 1
            else:
                job.state = "taken"
                self._in_progress += len(job.texts)
                self._load.in_progress += job.units
                return True
        _settle(job, error=Expired("not decoded before its deadline") if job.state == "expired"
                else self._refusal())
        return False

    def _refusal(self) -> Exception:
        if self.failure is not None:
            return WorkerDied(f"the decoding worker has died ({self.failure})")
        return ShuttingDown("the service is shutting down: its grace period for accepted requests is over")

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """The jobs of one batch, and whether the end of the queue (_STOP) was reached."""
        jobs = self._current = [first] if self._take(first) else []  # held: _die answers them
        count = len(first.texts) if jobs else 0
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            job = self._next(max(0.0, deadline - time.monotonic()))
            if job is None:
                break
            if job is _STOP:
                return jobs, True
            if self._take(job):
                jobs.append(job)
                count += len(job.texts)
        return jobs, False

    def _run(self) -> None:
        try:
            while (first := self._waiting.get()) is not _STOP:
                jobs, last = self._gather(first)
                groups: dict[Options, list[Job]] = {}
                for job in jobs:
                    groups.setdefault(job.options, []).append(job)
                for options, group in groups.items():
                    self._decode(options, group)
                self._current = []
                if last:
                    break
        except BaseException as e:  # a bug or a fatal error: no request may wait for an answer forever
            self._die(e)

    def _die(self, error: BaseException) -> None:
        """Record why the worker ended and answer every request it held or that waits (WorkerDied)."""
        with self._lock:
            self.failure = f"{type(error).__name__}: {error}"
        log.critical("the decoding worker died; the service cannot translate any more", exc_info=error)
        for job in self._current:
            _settle(job, error=self._refusal())
        self._refuse_waiting()

    def _call_size(self, beam_size: int) -> int:
        """Sentences per decoding call at this beam."""
        if self.beam_size is None:
            return self.max_batch
        return max(1, min(self.max_batch, self.max_batch * self.beam_size // beam_size))

    def _decode(self, options: Options, jobs: list[Job]) -> None:
        """Decode the sentences of `jobs` in calls of _call_size sentences, answering each job as
        soon as its last sentence is done; before each call, jobs abandoned, past their deadline
        or refused by abort() are dropped."""
        pending = [(job, i) for job in jobs for i in range(len(job.texts))]
        size = self._call_size(options.beam_size)
        while pending:
            self._settle_lost(jobs)
            kept = [(job, i) for job, i in pending if not job.done()]
            self._forget([item for item in pending if item[0].done()])
            call, pending = kept[:size], kept[size:]
            if not call:
                break
            self._call(options, call)

    def _call(self, options: Options, call: list[tuple[Job, int]]) -> None:
        """One decoding call; cut short (and its results dropped) once nobody waits for any of it."""
        texts = [job.texts[i] for job, i in call]
        owners = {job for job, _ in call}
        cut = []

        def cancelled() -> bool:  # asked by the search once a step
            now = time.monotonic()
            if self.aborting or all(job.done() or job.expired(now) for job in owners):
                cut.append(now)
            return bool(cut)

        with self._lock:
            self._load.start_call(work(texts, options.beam_size), time.monotonic())
        start = time.perf_counter()
        try:
            results = self.translator.translate_detailed(texts, nbest=options.nbest, beam_size=options.beam_size,
                                                         return_attention=options.attention, cancelled=cancelled)
        except Exception as e:  # every request of this call hears of it; the worker goes on
            self._forget(call, call=True)
            for job, _ in call:
                _settle(job, error=e)
            return
        self._forget(call, call=True, seconds=None if cut else time.perf_counter() - start)
        if cut:  # the hypotheses were cut short: nobody gets them
            with self._lock:
                self.cut_short += 1
            self._settle_lost(owners)
            return
        with self._lock:
            self.batches += 1
            self.sentences += len(texts)
        for (job, i), hyps in zip(call, results):
            job.results[i] = hyps
            job.left -= 1
            if job.left == 0:
                _settle(job, result=job.results)

    def _settle_lost(self, jobs: Iterable[Job]) -> None:
        """Answer the jobs nobody will decode: past their deadline (Expired), or all after abort()."""
        now = time.monotonic()
        for job in jobs:
            if self.aborting:
                _settle(job, error=self._refusal())
            elif job.expired(now) and _settle(job, error=Expired("not decoded before its deadline")):
                with self._lock:
                    self.expired += 1

    def _forget(self, items: list[tuple[Job, int]], *, call: bool = False, seconds: float | None = None) -> None:
        """Take `items` (decoded, or dropped) out of the work in progress; with `call`, they were
        the running call, which took `seconds` (None: no measure of the speed)."""
        with self._lock:
            self._in_progress -= len(items)
            self._load.in_progress -= sum(job.unit(i) for job, i in items)
            if call:
                self._load.end_call(seconds)


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
