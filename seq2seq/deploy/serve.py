"""`seq2seq serve`: a trained model (or an ensemble of runs) behind HTTP.

    POST /translate  {"text": "..."} or {"texts": [...]}, optional "beam_size", "nbest",
                     "attention" -> {"translation": ...} or {"translations": [...]}, and "details"
    GET  /health     200 {"status": "ready"} once the model is loaded; 503 {"error": why} before, when
                     the decoding worker has died, and while the service shuts down
    GET  /info       model, vocabularies, precision, decoding settings, limits
    GET  /           a small web page to try it

Requests are decoded by a Batcher (batching.py), so concurrent requests share batches. A bad
request gets a 4xx JSON {"error": ...} that says what was wrong and touches nothing else. Under
overload the service sheds work instead of stalling: a request that would wait too long behind the
work queued and in progress gets 503 with Retry-After at once; work of a client that went away, or
that passed its --timeout (504), is dropped, within a step of the search when it is being decoded.
SIGTERM stops accepting (503), answers what was accepted within --shutdown-grace seconds, refuses
what is left (503), and exits.
Starlette and uvicorn come with the `serve` extra (pip install 'seq2seq-rnn[serve]').
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Sequence

from seq2seq.deploy.admission import calibrate
from seq2seq.deploy.batching import (Batcher, Expired, Options, Overloaded, ShuttingDown, WorkerDied,
                                     as_dict)
from seq2seq.decoding.onnx_model import is_export, verify
from seq2seq.decoding.translator import Translator
from seq2seq.run.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """What one request may ask for; more is a 4xx answer."""
    max_body_bytes: int = 1_000_000
    max_sentences: int = 64
    max_chars: int = 2_000
    max_beam: int = 16
    max_nbest: int = 8


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


KNOWN_KEYS = {"text", "texts", "beam_size", "nbest", "attention"}
SHUTDOWN_GRACE = 30.0  # seconds (--shutdown-grace): what orchestrators give by default (Kubernetes' 30 s)
# uvicorn waits this much longer than the grace for the answers in flight before it cancels them:
# the batcher refuses what is left when the grace ends, and those answers need a moment to go out.
SHUTDOWN_MARGIN = 5.0


def parse_request(body: bytes, limits: Limits, default_beam: int) -> tuple[list[str], Options, bool]:
    """The texts, decoding options and whether one text (not a list) was sent; BadRequest otherwise."""
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, f"request body over {limits.max_body_bytes} bytes")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(400, f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest(400, "body is not valid here: JSON nested too deeply") from None
    except Exception as e:  # any other failure of the parser is still the body's fault, never a 500
        raise BadRequest(400, f"body cannot be parsed ({type(e).__name__})") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, 'expected a JSON object such as {"text": "..."}')
    unknown = sorted(set(payload) - KNOWN_KEYS)
    if unknown:
        raise BadRequest(400, f"unknown field {unknown[0]!r}; known: {', '.join(sorted(KNOWN_KEYS))}")
    if ("text" in payload) == ("texts" in payload):
        raise BadRequest(400, 'give exactly one of "text" (a string) or "texts" (a list of strings)')
    single = "text" in payload
    texts = [payload["text"]] if single else payload["texts"]
    if not isinstance(texts, list):
        raise BadRequest(400, '"texts" must be a list of strings')
    if len(texts) > limits.max_sentences:
        raise BadRequest(413, f'"texts" has {len(texts)} sentences; at most {limits.max_sentences} per request')
    for i, text in enumerate(texts):
        where = '"text"' if single else f'"texts"[{i}]'
        if not isinstance(text, str):
            raise BadRequest(400, f"{where} must be a string, got {type(text).__name__}")
        if len(text) > limits.max_chars:
            raise BadRequest(413, f"{where} has {len(text)} characters; at most {limits.max_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(400, f"{where} is not valid Unicode (a lone surrogate)") from None
    beam = _int_option(payload, "beam_size", default_beam, limits.max_beam)
    nbest = _int_option(payload, "nbest", 1, limits.max_nbest)
    attention = payload.get("attention", False)
    if not isinstance(attention, bool):
        raise BadRequest(400, '"attention" must be true or false')
    return texts, Options(max(beam, nbest), nbest, attention), single


def _int_option(payload: dict, key: str, default: int, most: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise BadRequest(400, f'"{key}" must be an integer from 1 to {most}, got {value!r}')
    return value


class Service:
    """The model (loaded in a thread, so /health can answer while it loads) and its batcher."""

    def __init__(self, models: Sequence[str], *, load_options: dict, limits: Limits, beam_size: int | None,
                 max_batch: int, max_wait: float, max_queue: int | None = None, max_queue_wait: float | None = None,
                 timeout: float | None = None, shutdown_grace: float = SHUTDOWN_GRACE):
        """`max_queue`: most sentences waiting; `max_queue_wait`: most seconds of work ahead of a
        request; `timeout`: seconds a request may take before it is answered 504 and dropped (None:
        no bound); `shutdown_grace`: seconds stop() leaves the accepted requests to be answered."""
        self.models, self.load_options, self.limits = list(models), load_options, limits
        self.beam_size, self.max_batch, self.max_wait = beam_size, max_batch, max_wait
        self.max_queue, self.max_queue_wait, self.timeout = max_queue, max_queue_wait, timeout
        self.shutdown_grace = shutdown_grace
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, for stop_soon
        self.batcher: Batcher | None = None
        self.translator: Translator | None = None
        self.failure: str | None = None
        self.loaded = threading.Event()

    def load(self) -> None:
        try:
            target = self.models[0] if len(self.models) == 1 else self.models
            self.translator = Translator.load(target, **self.load_options)
            self.beam_size = self.beam_size or self.translator.config.decoding.beam_size
            # Before the first request is decoded, admission prices work at the speed of one
            # decode of made-up sentences here (admission.calibrate); /health waits for it.
            speed = calibrate(self.translator, self.beam_size)
            self.batcher = Batcher(self.translator, max_batch=self.max_batch, max_wait=self.max_wait,
                                   max_queue=self.max_queue, max_queue_wait=self.max_queue_wait,
                                   beam_size=self.beam_size, seconds_per_unit=speed)
            log.info("model loaded: %s", ", ".join(map(str, self.models)))
        except Exception as e:  # reported by /health and on the console; the service stays up
            self.failure = f"{type(e).__name__}: {e}"
            log.error("cannot load the model: %s", self.failure)
        finally:
            self.loaded.set()

    def info(self) -> dict[str, Any]:
        t = self.translator
        d, dc = t.config.data, t.config.decoding
        model = t.config.model
        return {"models": [str(p) for p in t.run_dirs],
                "languages": {"source": d.src_lang, "target": d.tgt_lang},
                "vocabulary": {"source": len(t.src_tok), "target": len(t.tgt_tok)},
                "architecture": {"encoder": asdict(model.encoder), "decoder": asdict(model.decoder)},
                "device": str(t.device), "precision": t.precision, "quantize": self.load_options.get("quantize"),
                "decoding": {"beam_size": self.beam_size, "length_penalty": dc.length_penalty,
                             "max_len_ratio": dc.max_len_ratio, "max_len_offset": dc.max_len_offset},
                "batching": {"max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1000,
                             "batches": self.batcher.batches, "sentences": self.batcher.sentences},
                "queue": {"max_queue": self.max_queue, "max_queue_wait_s": self.max_queue_wait,
                          "timeout_s": self.timeout, "shutdown_grace_s": self.shutdown_grace,
                          **self.batcher.counts()},
                "limits": asdict(self.limits)}

    def stop(self, now: bool = False) -> None:
        """Refuse new requests (503); answer those accepted within shutdown_grace seconds (`now`:
        none), then refuse what is left (503)."""
        if self.batcher is not None:
            self.batcher.stop(0.0 if now else self.shutdown_grace)

    def stop_soon(self, now: bool = False) -> None:
        """stop() from a signal handler: run it on the server's event loop (no locks taken here)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.stop, now)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close(timeout=2.0)  # the worker is a daemon thread: exit does not wait for it


def build_app(service: Service):
    """The Starlette application around `service`: its routes, its lifespan (the model loads in
    a thread at start-up and the batcher closes at shutdown) and a JSON 500 for a bug."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    async def translate(request):
        return await _translate(service, request)

    async def health(request):
        waiting = _not_ready(service)
        if waiting is None and (why := service.batcher.health()) is not None:
            waiting = _error(503, why)  # a dead worker or a shutdown: a load balancer sends work elsewhere
        return waiting if waiting is not None else JSONResponse({"status": "ready"})

    async def info(request):
        waiting = _not_ready(service)
        return waiting if waiting is not None else JSONResponse(service.info())

    async def page(request):
        return HTMLResponse(resources.files("seq2seq.deploy").joinpath("serve_page.html").read_text(encoding="utf-8"))

    async def heatmap_js(request):  # the attention heatmap the exported page uses too
        return Response(resources.files("seq2seq.deploy").joinpath("web", "heatmap.js").read_text(encoding="utf-8"),
                        media_type="text/javascript")

    async def server_error(request, exc):
        log.exception("error while answering %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    @asynccontextmanager
    async def lifespan(app):
        service.loop = asyncio.get_running_loop()
        threading.Thread(target=service.load, name="seq2seq-load", daemon=True).start()
        yield
        # uvicorn has answered the requests in flight (SIGTERM started the grace period: stop_soon).
        await asyncio.get_running_loop().run_in_executor(None, service.close)

    routes = [Route("/", page), Route("/heatmap.js", heatmap_js), Route("/health", health), Route("/info", info),
              Route("/translate", translate, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: server_error})


def _error(status: int, message: str, retry_after: int | None = None):
    """A JSON {"error": message} answer, with Retry-After when the client may try again."""
    from starlette.responses import JSONResponse  # here, not at the top: Starlette is the serve extra
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _not_ready(service: Service):
    """A 503 answer while the model loads or when it could not be loaded; None once it is ready."""
    if service.failure is not None:
        return _error(503, f"the model could not be loaded: {service.failure}")
    if service.translator is None or service.batcher is None:  # the batcher comes after calibration
        return _error(503, "the model is still loading", retry_after=1)
    return None


async def _translate(service: Service, request):
    """POST /translate: the request's translations, or the error that says why not."""
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse
    waiting = _not_ready(service)
    if waiting is not None:
        return waiting
    try:
        texts, options, single = parse_request(await _read_body(service, request), service.limits,
                                               service.beam_size)
    except BadRequest as e:
        return _error(e.status, str(e))
    except ClientDisconnect:
        return _error(400, "the client went away before sending the whole body")
    if not texts:  # nothing to decode: no reason to queue behind anyone
        return JSONResponse({"translations": [], "details": []})
    try:
        results = await _decode(service, request, texts, options)
    except Overloaded as e:
        return _error(503, str(e), retry_after=e.retry_after)
    except ShuttingDown as e:
        return _error(503, str(e), retry_after=1)
    except WorkerDied as e:
        return _error(503, f"{e}; the service cannot translate until it is restarted")
    except Expired:
        return _error(504, f"not translated within the service's time limit ({service.timeout:g} s, --timeout); "
                           f"the work was dropped")
    if results is None:
        return _error(499, "the client went away; its work was dropped")  # nobody reads this
    details = [as_dict(hyps, options.attention) for hyps in results]
    answer: dict[str, Any] = ({"translation": details[0]["text"]} if single
                              else {"translations": [d["text"] for d in details]})
    answer["details"] = details
    return JSONResponse(answer)


async def _read_body(service: Service, request) -> bytes:
    """The body, refused as soon as it grows past the limit (whatever Content-Length says)."""
    limit = service.limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body over {limit} bytes")
    return bytes(body)


async def _client_gone(request) -> None:
    """Returns when the client disconnects: the server's http.disconnect message, which
    arrives on the request's channel once its body has been read."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _decode(service: Service, request, texts: list[str], options: Options):
    """The request's translations; None when its client went away first. Overloaded,
    ShuttingDown or Expired (over --timeout) otherwise; the work of a request that is not
    answered is dropped."""
    batcher = service.batcher
    job = batcher.submit(texts, options, timeout=service.timeout)
    answer = asyncio.wrap_future(job)
    answer.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, so never logged
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({answer, gone}, timeout=service.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # uvicorn gave up on this request (shutdown)
        batcher.abandon(job)
        raise
    finally:
        gone.cancel()
    if answer in done:
        return answer.result()
    batcher.abandon(job)
    if gone in done:
        return None
    raise Expired("over --timeout")


def check_models(models: Sequence[str], checkpoint: str) -> None:
    """Each model (a run directory or an export folder) is there and readable: a wrong path is an
    error before the service starts, not a service that never gets ready."""
    for run_dir in models:
        if is_export(run_dir):
            verify(run_dir)
        else:
            RunDir(run_dir).checkpoint(checkpoint)


def serve(models: Sequence[str], *, host: str = "127.0.0.1", port: int = 8080, load_options: dict,
          limits: Limits, beam_size: int | None, max_batch: int, max_wait: float, max_queue: int | None = None,
          max_queue_wait: float | None = None, timeout: float | None = None, access_log: bool = False,
          shutdown_grace: float = SHUTDOWN_GRACE) -> None:
    """Run the service until SIGINT or SIGTERM: both stop accepting (new connections are refused,
    requests not yet queued get 503), answer the accepted requests for at most `shutdown_grace`
    seconds, then refuse what is left (503) and exit. A second signal refuses what is left at once."""
    import uvicorn
    service = Service(models, load_options=load_options, limits=limits, beam_size=beam_size,
                      max_batch=max_batch, max_wait=max_wait, max_queue=max_queue, max_queue_wait=max_queue_wait,
                      timeout=timeout, shutdown_grace=shutdown_grace)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # uvicorn waits for every request in flight before it shuts the app down; the batcher
            # answers them within the grace, so that wait ends by then.
            service.stop_soon(now=self.should_exit)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(build_app(service), host=host, port=port, log_level="info", access_log=access_log,
                            timeout_graceful_shutdown=shutdown_grace + SHUTDOWN_MARGIN, limit_concurrency=1000)
    Server(config).run()
