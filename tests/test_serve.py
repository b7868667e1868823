"""seq2seq serve: answers equal offline translation, concurrent requests share batches and each
gets its own answer exactly once, bad requests get a 4xx that says why and harm nothing,
/health waits for the model and reports a dead worker, admission weighs the work in progress,
work nobody waits for stops within a step of the search, SIGTERM answers the accepted requests
within its grace, and the web page works in a real (headless) browser.

No test asserts how long something took: on a loaded 2-core machine any bound is a guess. A
test that needs "at once" holds the worker with an event (a gate the test opens) and checks
that the answer came while the gate was still closed."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from conftest import NEEDS_CHROMIUM, have_chromium, requires  # noqa: E402
from seq2seq.deploy.admission import RETRY_AFTER_MAX, Workload, work  # noqa: E402
from seq2seq.deploy.batching import Batcher, Expired, Options, Overloaded, ShuttingDown  # noqa: E402
from seq2seq.deploy.serve import Limits, Service, build_app  # noqa: E402
from seq2seq.decoding.search import Sampling  # noqa: E402
from seq2seq.decoding.translator import Translation, Translator  # noqa: E402


def ready_client(service: Service) -> TestClient:
    client = TestClient(build_app(service)).__enter__()
    assert service.loaded.wait(60)
    return client


@pytest.fixture(scope="module")
def client(trained_run):
    service = Service([str(trained_run)], load_options={"device": "cpu"}, limits=Limits(max_sentences=8,
                      max_chars=200, max_body_bytes=4096, max_beam=6, max_nbest=3), beam_size=None,
                      max_batch=16, max_wait=0.002)
    c = ready_client(service)
    yield c
    c.__exit__(None, None, None)


def test_answers_equal_offline_translation(client, trained_run, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:8]
    offline = Translator.load(trained_run, device="cpu")
    assert client.get("/health").json() == {"status": "ready"}
    got = client.post("/translate", json={"texts": lines}).json()
    assert got["translations"] == offline.translate(lines)  # the run's beam size (3)
    one = client.post("/translate", json={"text": lines[0], "beam_size": 1, "nbest": 1}).json()
    assert one["translation"] == offline.translate(lines[:1], beam_size=1)[0]
    detailed = client.post("/translate", json={"text": lines[0], "nbest": 3, "attention": True}).json()["details"][0]
    expected = offline.translate_detailed(lines[:1], nbest=3, return_attention=True)[0]
    assert [h["text"] for h in detailed["nbest"]] == [t.text for t in expected]
    assert detailed["attention"]["source"] == expected[0].src_pieces
    assert len(detailed["attention"]["weights"]) == len(expected[0].tgt_pieces) + 1
    info = client.get("/info").json()
    assert info["models"] == [str(trained_run)] and info["decoding"]["beam_size"] == 3
    assert info["languages"] == {"source": "src", "target": "tgt"} and info["limits"]["max_sentences"] == 8


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b'["a list"]', 400, "expected a JSON object"),
    (b'{"txt": "a"}', 400, "unknown field 'txt'"),
    (b'{}', 400, 'exactly one of "text"'),
    (b'{"text": "ka", "texts": ["ka"]}', 400, 'exactly one of "text"'),
    (b'{"text": 3}', 400, '"text" must be a string'),
    (b'{"texts": "ka lo"}', 400, '"texts" must be a list'),
    (b'{"texts": ["ka", null]}', 400, '"texts"[1] must be a string'),
    (b'{"texts": ["ka"], "beam_size": 0}', 400, '"beam_size" must be an integer from 1 to 6'),
    (b'{"texts": ["ka"], "beam_size": true}', 400, '"beam_size" must be an integer'),
    (b'{"texts": ["ka"], "nbest": 4}', 400, '"nbest" must be an integer from 1 to 3'),
    (b'{"texts": ["ka"], "attention": "yes"}', 400, '"attention" must be true or false'),
    (b'{"text": "\\ud800"}', 400, "lone surrogate"),
    (json.dumps({"texts": ["ka"] * 9}).encode(), 413, "at most 8 per request"),
    (json.dumps({"text": "ka " * 100}).encode(), 413, "at most 200"),
    (json.dumps({"text": "x" * 5000}).encode(), 413, "over 4096 bytes"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_requests_get_a_4xx_that_says_why_and_harm_nothing(client, body, status, message):
    response = client.post("/translate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]
    assert client.post("/translate", json={"text": "ka lo"}).json()["translation"] == "BETA ALPHA"


def test_an_oversized_body_without_content_length_is_refused(client):
    def chunks():
        for _ in range(10):
            yield b" " * 1000
    response = client.post("/translate", content=chunks())
    assert response.status_code == 413 and "over 4096 bytes" in response.json()["error"]


def test_a_run_that_is_not_there_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "seq2seq", "serve", "--model", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a run directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_health_waits_for_the_model_and_reports_a_failed_load(tmp_path, trained_run):
    service = Service([str(trained_run)], load_options={"device": "cpu"}, limits=Limits(), beam_size=None,
                      max_batch=8, max_wait=0.001)
    release = threading.Event()
    load = service.load
    service.load = lambda: (release.wait(30), load())
    with TestClient(build_app(service)) as c:
        assert c.get("/health").status_code == 503 and "loading" in c.get("/health").json()["error"]
        assert c.post("/translate", json={"text": "ka"}).status_code == 503
        release.set()
        assert service.loaded.wait(60)
        assert c.get("/health").status_code == 200
        # Before any request, admission already prices work: at the speed of a start-up decode.
        counts = service.batcher.counts()
        assert counts["speed_from"] == "start-up estimate" and counts["seconds_per_unit"] > 0
    broken = Service([str(tmp_path / "no_run")], load_options={"device": "cpu"}, limits=Limits(), beam_size=None,
                     max_batch=8, max_wait=0.001)
    with TestClient(build_app(broken)) as c:
        assert broken.loaded.wait(60)
        answer = c.get("/health")
        assert answer.status_code == 503 and "could not be loaded" in answer.json()["error"]


class Recording:
    """A translator stand-in that records its batches and 'translates' by upper-casing; its
    decoding waits for `release`, so that requests pile up meanwhile whatever the scheduling."""
    def __init__(self):
        self.batches = []
        self.release = threading.Event()

    def translate_detailed(self, lines, *, nbest, beam_size, return_attention, cancelled=None):
        assert self.release.wait(30)
        self.batches.append((len(lines), beam_size))
        return [[Translation(line.upper(), 0.0, 0.0, [], [], None)] for line in lines]


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer():
    fake = Recording()
    batcher = Batcher(fake, max_batch=32, max_wait=0.005)
    requests = [[f"r{i} s{j}" for j in range(i % 3 + 1)] for i in range(120)]
    options = [Options(5 if i % 4 else 2, 1, False) for i in range(120)]
    with ThreadPoolExecutor(32) as pool:
        futures = list(pool.map(lambda i: batcher.submit(requests[i], options[i]), range(120)))
        fake.release.set()  # submit returns once a request is queued: all 120 wait now
        answers = [f.result(timeout=30) for f in futures]
    batcher.close()
    for texts, answer in zip(requests, answers):
        assert [hyps[0].text for hyps in answer] == [t.upper() for t in texts]
    assert sum(n for n, _ in fake.batches) == sum(len(r) for r in requests)  # every sentence once
    # Requests were decoded together: after the first, every gathering takes 32 sentences or more
    # of the 240 (at most 10), and splits them into at most 2 calls (two beam sizes).
    assert len(fake.batches) <= 1 + 2 * 10
    assert all(n <= 32 + 2 for n, _ in fake.batches)  # a batch stops growing at max_batch (+ its last request)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, *extra: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "seq2seq", "serve", "--model", str(run_dir), "--port", str(port),
                             "--device", "cpu", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # loading and the start-up calibration, on a loaded machine
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=30) as r:
                if r.status == 200:
                    return proc, url
        except OSError:  # not listening yet (refused), loading (503), or slow to answer
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.communicate()[0])


def post(url: str, payload: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(url + "/translate", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


def post_status(url: str, payload: dict, timeout: float = 120) -> tuple[int, dict]:
    """POST /translate: the status and the JSON answer, whatever the status."""
    try:
        return 200, post(url, payload, timeout)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_for_info(url: str, done, seconds: float = 120) -> dict:
    """GET /info until `done`(it) is true (an event, not a guess at how long it takes)."""
    deadline = time.monotonic() + seconds
    while True:
        with urllib.request.urlopen(url + "/info", timeout=30) as r:
            info = json.loads(r.read())
        if done(info):
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def flood_then_sigterm(url: str, proc, lines: list[str], count: int) -> list[tuple[int, dict]]:
    """Send `count` requests of `lines` at beam 16, SIGTERM the service once it has accepted them
    all and some still wait in its queue; their answers."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(post_status, url, {"texts": lines, "beam_size": 16}) for _ in range(count)]
        info = wait_for_info(url, lambda i: i["queue"]["accepted"] == count)
        assert info["queue"]["queued_sentences"] > 0, info  # what SIGTERM must not refuse is there
        proc.send_signal(signal.SIGTERM)
        return [f.result(timeout=300) for f in futures]


def test_sigterm_answers_every_accepted_request_within_the_grace(trained_run, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:32]
    # No bound on the queue: four 32-sentence beam-16 requests take seconds to decode.
    proc, url = start_server(trained_run, "--max-queue", "100000", "--max-queue-wait", "0", "--timeout", "0",
                             "--shutdown-grace", "300")
    try:
        answers = flood_then_sigterm(url, proc, lines, 4)
        code = proc.wait(timeout=300)
        assert [status for status, _ in answers] == [200] * 4  # queued when SIGTERM came, answered all the same
        assert all(len(a["translations"]) == len(lines) for _, a in answers)
        # uvicorn ends by re-raising the signal once everything is answered.
        assert code in (0, -signal.SIGTERM) and "Finished server process" in proc.stdout.read()
    finally:
        proc.kill()


def test_sigterm_refuses_what_is_left_when_the_grace_is_over_and_exits(trained_run, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:64]
    proc, url = start_server(trained_run, "--max-queue", "100000", "--max-queue-wait", "0", "--timeout", "0",
                             "--shutdown-grace", "0")
    try:
        answers = flood_then_sigterm(url, proc, lines, 8)
        code = proc.wait(timeout=120)
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {200, 503} and statuses.count(503) >= 1, statuses
        assert all(len(a["translations"]) == len(lines) for status, a in answers if status == 200)
        assert all("shutting down" in a["error"] for status, a in answers if status == 503)
        assert code in (0, -signal.SIGTERM) and "Finished server process" in proc.stdout.read()
    finally:
        proc.kill()


@requires(have_chromium(), NEEDS_CHROMIUM)  # under CI a missing browser fails the test
def test_the_web_page_translates_in_a_real_browser(trained_run):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proc, url = start_server(trained_run)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=shutil.which("chromedriver")), options=options)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "src → tgt" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "source").send_keys("ka lo mi\npe ri")
        driver.find_element(By.ID, "want-nbest").click()
        driver.find_element(By.ID, "want-attention").click()
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.ID, "output").text not in ("", "translating ..."))
        assert driver.find_element(By.ID, "output").text == "GAMMA BETA ALPHA\nZETA EPS"
        assert len(driver.find_elements(By.CSS_SELECTOR, "ol.nbest")) == 2
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.heat")) == 2
        # A request the service refuses shows its message on the page.
        beam = driver.find_element(By.ID, "beam")
        beam.clear()
        beam.send_keys("99")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text != "")
        assert "beam_size" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_the_load_test_script_finds_equal_answers_and_no_server_errors(trained_run, synthetic_dir, tmp_path):
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join((synthetic_dir / "test.src").read_text().splitlines()[:24]) + "\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "serve_load.py"
    proc = subprocess.run([sys.executable, str(script), str(trained_run), "--input", str(lines), "--out",
                           str(tmp_path / "out"), "--clients", "1", "4", "--fuzz", "120", "--beam-size", "3"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["clients"] for r in results["rounds"]] == [1, 4]
    assert all(r["differ_from_offline"] == 0 for r in results["rounds"])
    fuzz = results["fuzz"]
    assert fuzz["server_5xx"] == 0 and fuzz["good_answered_wrong"] == 0 and 0 < fuzz["good"] < 120
    assert sum(n for status, n in fuzz["statuses"].items() if status.startswith("4")) == 120 - fuzz["good"]
    assert "| 4 |" in (tmp_path / "out" / "results.md").read_text()


# ---------------------------------------------------------------------------------------
# Overload: a bounded queue, work of clients that went away dropped, deadlines, shutdown (issue 28)


class Gated:
    """A translator stand-in whose decoding waits for `release`; records every sentence it decodes."""
    def __init__(self, seconds_per_sentence: float = 0.0):
        self.release = threading.Event()
        self.started = threading.Event()
        self.decoded: list[str] = []
        self.seconds_per_sentence = seconds_per_sentence

    def translate_detailed(self, lines, *, nbest, beam_size, return_attention, cancelled=None):
        self.started.set()
        assert self.release.wait(30)
        time.sleep(self.seconds_per_sentence * len(lines))
        self.decoded += lines
        return [[Translation(line.upper(), 0.0, 0.0, [], [], None)] for line in lines]


class Stepping:
    """A translator stand-in that decodes in `steps` steps and asks `cancelled` after each, as
    the search does; every call pauses after its first step until `resume` is set. `calls`:
    (lines, steps run) of each call."""
    def __init__(self, steps: int = 200):
        self.steps = steps
        self.first_step = threading.Event()
        self.resume = threading.Event()
        self.calls: list[tuple[list[str], int]] = []

    def translate_detailed(self, lines, *, nbest, beam_size, return_attention, cancelled=None):
        ran = 0
        for step in range(self.steps):
            ran += 1
            if step == 0:
                self.first_step.set()
                assert self.resume.wait(30)
            if cancelled is not None and cancelled():
                break
        self.calls.append((list(lines), ran))
        return [[Translation(line.upper(), 0.0, 0.0, [], [], None)] for line in lines]


ONE = Options(2, 1, False)


def started_batcher(fake, **kwargs) -> tuple[Batcher, object]:
    """A batcher whose worker is busy with a first request (decoding, blocked on fake.release)."""
    batcher = Batcher(fake, max_batch=4, max_wait=0.0, **kwargs)
    first = batcher.submit(["first"], ONE)
    assert fake.started.wait(10)
    return batcher, first


def test_a_full_queue_refuses_at_once_with_a_time_to_come_back():
    fake = Gated()
    batcher, first = started_batcher(fake, max_queue=6)
    queued = [batcher.submit([f"q{i}a", f"q{i}b"], ONE) for i in range(3)]  # 6 sentences wait
    with pytest.raises(Overloaded) as info:
        batcher.submit(["one more"], ONE)  # refused while the gate is closed: it waited for no decoding
    assert info.value.retry_after >= 1 and not first.done()
    fake.release.set()
    assert [h[0].text for h in first.result(10)] == ["FIRST"]
    assert all(len(job.result(10)) == 2 for job in queued)
    assert batcher.submit(["now there is room"], ONE).result(10)[0][0].text == "NOW THERE IS ROOM"
    assert batcher.counts()["refused"] == 1
    batcher.close()


def test_before_any_measurement_the_start_up_estimate_bounds_the_wait():
    fake = Gated()
    # 0.01 s a unit: "first" is 4.5 units at beam 2 (0.045 s), four "s" 10 units (0.1 s).
    batcher, first = started_batcher(fake, max_queue_wait=0.95, seconds_per_unit=0.01)
    assert work(["s"] * 4, 2) == 10 and batcher.counts()["speed_from"] == "start-up estimate"
    accepted = []
    with pytest.raises(Overloaded) as info:
        while len(accepted) < 20:
            accepted.append(batcher.submit(["s"] * 4, ONE))
    # Ahead of the n-th: 0.1 n s queued and at most 0.045 s left of "first": ten get in, whatever the clock.
    assert len(accepted) == 10 and info.value.retry_after >= 1
    assert 1.0 - 1e-9 <= batcher.expected_wait() <= 1.045 + 1e-9
    fake.release.set()
    assert all(len(job.result(10)) == 4 for job in accepted) and first.result(10)
    assert batcher.counts()["speed_from"] == "measured"  # the first call's time replaced the estimate
    batcher.close()


def test_admission_weighs_the_batch_in_progress_when_nothing_waits():
    fake = Gated()
    batcher = Batcher(fake, max_batch=64, max_wait=0.0, max_queue_wait=10.0, seconds_per_unit=0.01)
    heavy = batcher.submit(["a long sentence " * 20] * 64, Options(16, 1, False))  # about 12 minutes
    assert fake.started.wait(10)
    assert batcher.counts()["queued_sentences"] == 0  # nothing waits, but the worker is far from free
    with pytest.raises(Overloaded) as info:
        batcher.submit(["one sentence"], ONE)
    assert info.value.retry_after == RETRY_AFTER_MAX and "expected wait" in str(info.value)
    fake.release.set()
    assert len(heavy.result(30)) == 64
    assert batcher.submit(["one sentence"], ONE).result(10)[0][0].text == "ONE SENTENCE"  # idle: let in
    batcher.close()


def test_the_work_in_progress_is_priced_at_what_remains_of_it():
    fake = Gated()
    batcher = Batcher(fake, max_batch=4, max_wait=0.0, seconds_per_unit=1.0)
    before = time.monotonic()
    batcher.submit(["x" * 36], ONE)  # 2 * (1 + 36 / 4) = 20 units: 20 s at the estimate
    assert fake.started.wait(10)
    time.sleep(0.2)
    wait = batcher.expected_wait()
    assert 20 - (time.monotonic() - before) - 1e-9 <= wait <= 20 - 0.2 + 1e-9
    fake.release.set()
    batcher.close(10)


def test_the_workload_measures_only_calls_that_decoded_everything():
    load = Workload(seconds_per_unit=0.5)
    load.queued, load.in_progress = 10.0, 4.0
    load.start_call(4.0, now=100.0)
    assert load.seconds_ahead(101.0) == 10 * 0.5 + (4 * 0.5 - 1.0)  # the call has 1 s left
    assert load.seconds_ahead(200.0) == 10 * 0.5  # past its estimate: it counts as ending now
    load.end_call(None)  # cut short or failed: says nothing about the speed
    assert load.seconds_per_unit == 0.5 and load.source == "start-up estimate"
    load.start_call(4.0, now=300.0)
    load.end_call(8.0)  # the first measurement replaces the estimate ...
    assert load.seconds_per_unit == 2.0 and load.source == "measured"
    load.start_call(4.0, now=400.0)
    load.end_call(4.0)  # ... later ones are smoothed
    assert load.seconds_per_unit == pytest.approx(0.7 * 2.0 + 0.3 * 1.0)
    assert Workload().seconds_ahead(0.0) is None  # no estimate, no measurement: no bound


def test_work_of_a_request_given_up_is_never_decoded():
    fake = Gated()
    batcher, first = started_batcher(fake, max_queue=4)
    gone = batcher.submit(["gone 1", "gone 2", "gone 3", "gone 4"], ONE)
    with pytest.raises(Overloaded):
        batcher.submit(["kept"], ONE)
    batcher.abandon(gone)  # its client went away: its place in the queue is free at once
    kept = batcher.submit(["kept"], ONE)
    fake.release.set()
    assert kept.result(10)[0][0].text == "KEPT" and first.result(10)
    assert not any(line.startswith("gone") for line in fake.decoded)
    assert batcher.counts()["dropped"] == 1
    batcher.close()


def test_a_request_is_abandoned_between_the_chunks_of_its_decoding():
    fake = Gated()
    fake.release.set()
    batcher = Batcher(fake, max_batch=4, max_wait=0.0, beam_size=2)
    seen = []
    real = fake.translate_detailed

    def decode_then_abandon(lines, **kwargs):
        seen.append(len(lines))
        if len(seen) == 2:
            batcher.abandon(job)  # the client leaves while its request is being decoded
        return real(lines, **kwargs)

    fake.translate_detailed = decode_then_abandon
    job = batcher.submit([f"s{i}" for i in range(40)], Options(8, 1, False))
    with pytest.raises(CancelledError):
        job.result(10)
    batcher.close()
    # Beam 8 on a batcher sized for 4 sentences at beam 2: one sentence a call; two were decoded.
    assert seen == [1, 1] and len(fake.decoded) == 2


def test_a_call_whose_requests_are_all_abandoned_stops_within_a_step():
    fake = Stepping()
    batcher = Batcher(fake, max_batch=4, max_wait=0.0)
    gone = batcher.submit(["gone"], ONE)
    assert fake.first_step.wait(10)
    batcher.abandon(gone)  # its client left while it was being decoded
    fake.resume.set()
    assert batcher.submit(["next"], ONE).result(10)[0][0].text == "NEXT"  # the worker is free again
    assert fake.calls == [(["gone"], 1), (["next"], fake.steps)]  # the search asked once, and stopped
    assert batcher.counts()["cut_short"] == 1
    batcher.close()


def test_live_requests_in_a_call_keep_being_decoded():
    fake = Stepping()
    batcher = Batcher(fake, max_batch=2, max_wait=30.0)  # both requests in one call: it is full at 2
    gone, kept = batcher.submit(["gone"], ONE), batcher.submit(["kept"], ONE)
    assert fake.first_step.wait(10)
    batcher.abandon(gone)
    fake.resume.set()
    assert kept.result(10)[0][0].text == "KEPT"
    assert fake.calls == [(["gone", "kept"], fake.steps)] and batcher.counts()["cut_short"] == 0
    with pytest.raises(CancelledError):
        gone.result(0)
    batcher.close()


def test_a_request_past_its_deadline_stops_its_call_within_a_step():
    fake = Stepping()
    batcher = Batcher(fake, max_batch=4, max_wait=0.0)
    late = batcher.submit(["late"], ONE, timeout=60)
    assert fake.first_step.wait(10)
    late.deadline = time.monotonic() - 1  # its deadline passes while it is being decoded
    fake.resume.set()
    with pytest.raises(Expired):
        late.result(10)
    batcher.close(10)
    assert fake.calls == [(["late"], 1)]
    assert batcher.counts()["expired"] == 1 and batcher.counts()["cut_short"] == 1


def test_a_request_past_its_deadline_is_refused_and_dropped():
    fake = Gated()
    batcher, first = started_batcher(fake)
    late = batcher.submit(["late"], ONE, timeout=0.05)
    time.sleep(0.1)  # at least this long: past its deadline while it waits
    fake.release.set()
    with pytest.raises(Expired):
        late.result(10)
    assert first.result(10) and "late" not in fake.decoded and batcher.counts()["expired"] == 1
    batcher.close()


@pytest.mark.parametrize("options", [{"beam_size": 1}, {"beam_size": 3}, {"beam_size": 3, "nbest": 2},
                                     {"beam_size": 1, "sampling": Sampling(seed=1)}], ids=str)
def test_the_search_ends_a_step_after_it_is_cancelled(trained_run, synthetic_dir, options):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:6]
    translator = Translator.load(trained_run, device="cpu")
    asked = []

    def cancelled() -> bool:
        asked.append(len(asked))
        return len(asked) >= 2  # from the search's second step on

    cut = translator.translate_detailed(lines, cancelled=cancelled, **options)
    assert len(asked) == 2  # asked no more: the step after, every sentence ended (EOS forced)
    assert len(cut) == len(lines) and all(len(h.tgt_pieces) <= 2 for hyps in cut for h in hyps)
    whole = translator.translate_detailed(lines, **options)
    assert max(len(hyps[0].tgt_pieces) for hyps in whole) > 2  # not cancelled, they are longer


def test_stop_answers_the_accepted_requests_and_refuses_new_ones():
    fake = Gated()
    batcher, first = started_batcher(fake)
    queued = [batcher.submit([f"q{i}"], ONE) for i in range(6)]
    batcher.stop(grace=60)  # as SIGTERM does
    with pytest.raises(ShuttingDown):
        batcher.submit(["after"], ONE)
    assert batcher.health() == "the service is shutting down"
    fake.release.set()
    answers = [job.result(10)[0][0].text for job in [first] + queued]
    assert answers == ["FIRST"] + [f"Q{i}" for i in range(6)]  # accepted before SIGTERM: answered
    batcher.close(10)


def test_when_the_grace_is_over_what_is_left_is_refused_and_the_running_call_cut_short():
    fake = Stepping()
    batcher = Batcher(fake, max_batch=1, max_wait=0.0)
    running = batcher.submit(["running"], ONE)
    assert fake.first_step.wait(10)
    waiting = [batcher.submit([f"w{i}"], ONE) for i in range(3)]
    batcher.stop(grace=0.1)
    for job in waiting:
        with pytest.raises(ShuttingDown):
            job.result(30)  # refused once the grace ran out
    fake.resume.set()
    with pytest.raises(ShuttingDown):
        running.result(30)
    batcher.close(10)
    assert fake.calls == [(["running"], 1)]


def gated_client(**limits) -> tuple[TestClient, Service, Gated]:
    """The app around a Gated translator (no model): what the HTTP layer does under load."""
    fake = Gated()
    service = Service(["fake"], load_options={}, limits=Limits(max_sentences=8), beam_size=2, max_batch=4,
                      max_wait=0.0, **limits)
    service.load = lambda: None
    client = TestClient(build_app(service)).__enter__()
    service.translator = fake
    service.batcher = Batcher(fake, max_batch=4, max_wait=0.0, max_queue=service.max_queue,
                              max_queue_wait=service.max_queue_wait)
    service.loaded.set()
    return client, service, fake


def test_overload_is_a_503_with_retry_after_at_once():
    client, service, fake = gated_client(max_queue=8, max_queue_wait=None, timeout=30)
    with ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(client.post, "/translate", json={"texts": ["a"] * 8})]
        assert fake.started.wait(10)  # the first is being decoded
        busy.append(pool.submit(client.post, "/translate", json={"texts": ["b"] * 8}))
        wait_until(lambda: service.batcher.counts()["queued_sentences"] == 8)  # the second waits: the queue is full
        refused = client.post("/translate", json={"text": "one more"})
        # 503 while the gate is closed: it was refused at once (queued, it would have waited for the gate).
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "busy" in refused.json()["error"] and not fake.release.is_set()
        fake.release.set()
        assert [r.result(30).status_code for r in busy] == [200, 200]
    assert client.post("/translate", json={"text": "x"}).status_code == 200
    assert service.batcher.counts()["refused"] == 1
    client.__exit__(None, None, None)


def wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.01)


def test_a_request_over_its_deadline_gets_an_error_and_its_work_is_dropped():
    client, service, fake = gated_client(max_queue=64, max_queue_wait=None, timeout=0.3)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/translate", json={"text": "first"})
        assert fake.started.wait(10)
        late = client.post("/translate", json={"text": "late"})
        assert late.status_code == 504 and "0.3 s" in late.json()["error"]
        fake.release.set()
        assert first.result(30).status_code == 504  # it waited too, while the gate was closed
    # Requests are taken in order: once one sent after "late" is answered, "late" was dropped.
    assert service.batcher.submit(["after"], ONE).result(10)[0][0].text == "AFTER"
    assert "late" not in fake.decoded
    client.__exit__(None, None, None)


def test_an_empty_list_of_texts_is_answered_at_once():
    client, service, fake = gated_client(max_queue=8, timeout=5)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(client.post, "/translate", json={"text": "busy"})
        assert fake.started.wait(10)  # the worker is busy until the gate opens
        answer = client.post("/translate", json={"texts": []})
        assert answer.status_code == 200 and answer.json() == {"translations": [], "details": []}
        assert service.batcher.submit([], ONE).result(0) == []  # the batcher too: never queued
        fake.release.set()
        assert busy.result(30).status_code == 200
    client.__exit__(None, None, None)


class Fatal(BaseException):
    """A failure no `except Exception` catches (as a bug in a C extension can raise)."""


def test_health_is_503_when_the_decoding_worker_has_died():
    client, service, fake = gated_client(max_queue=8, timeout=30)
    assert client.get("/health").status_code == 200

    def die(lines, **kwargs):
        raise Fatal("the worker is gone")

    fake.translate_detailed = die
    answer = client.post("/translate", json={"text": "a"})  # answered, not left waiting for its timeout
    assert answer.status_code == 503 and "worker has died" in answer.json()["error"]
    health = client.get("/health")
    assert health.status_code == 503 and "Fatal: the worker is gone" in health.json()["error"]
    assert client.post("/translate", json={"text": "b"}).status_code == 503  # refused at once from now on
    client.__exit__(None, None, None)


def test_after_sigterm_new_requests_and_health_get_503():
    client, service, fake = gated_client(max_queue=8, timeout=30)
    fake.release.set()
    assert client.post("/translate", json={"text": "before"}).status_code == 200
    service.stop()  # what SIGTERM does (on the server's event loop)
    refused = client.post("/translate", json={"text": "after"})
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
    health = client.get("/health")
    assert health.status_code == 503 and "shutting down" in health.json()["error"]
    client.__exit__(None, None, None)


def test_deeply_nested_json_is_a_4xx(client):
    for body in (b"[" * 2000 + b"]" * 2000, b'{"text": ' + b"[" * 1500 + b"]" * 1500 + b"}"):
        response = client.post("/translate", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and "nested too deeply" in response.json()["error"]
    assert client.post("/translate", json={"text": "ka lo"}).json()["translation"] == "BETA ALPHA"


def test_parse_request_turns_any_parser_failure_into_a_4xx(monkeypatch):
    import seq2seq.deploy.serve as serve_module

    def broken(body):
        raise MemoryError("a parser that gives up")

    monkeypatch.setattr(serve_module.json, "loads", broken)
    with pytest.raises(serve_module.BadRequest) as info:
        serve_module.parse_request(b'{"text": "a"}', Limits(), 1)
    assert info.value.status == 400 and "cannot be parsed" in str(info.value)


def raw_request(url: str, payload: dict) -> socket.socket:
    """Send one POST /translate and return the open socket, without reading the answer."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(payload).encode()
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def test_work_of_clients_that_went_away_is_not_decoded(trained_run, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:64]
    proc, url = start_server(trained_run, "--max-queue", "2000", "--max-queue-wait", "0")
    try:
        sockets = [raw_request(url, {"texts": lines, "beam_size": 16}) for _ in range(10)]
        wait_for_info(url, lambda i: i["queue"]["accepted"] == 10)  # each takes a while to decode
        for s in sockets:
            s.close()  # every client gives up, the one being decoded too
        queue = wait_for_info(url, lambda i: i["queue"]["queued_sentences"] == 0
                              and i["queue"]["in_progress_sentences"] == 0)["queue"]
        # At most the first one or two were answered before their clients left; the request being
        # decoded when they left stopped within a step (its sentences are not counted as decoded).
        assert queue["dropped"] >= 8, queue
        with urllib.request.urlopen(url + "/info", timeout=30) as r:
            assert json.loads(r.read())["batching"]["sentences"] <= 2 * 64
        assert post(url, {"text": "ka lo"}, timeout=30)["translation"] == "BETA ALPHA"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_the_load_test_script_shows_the_service_under_overload(trained_run, synthetic_dir, tmp_path):
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join((synthetic_dir / "test.src").read_text().splitlines()[:24]) + "\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "serve_load.py"
    proc = subprocess.run([sys.executable, str(script), "--model", str(trained_run), "--input", str(lines), "--out",
                           str(tmp_path / "out"), "--overload", "--flood-clients", "12", "--give-up", "1",
                           "--fuzz", "60", "--beam-size", "3", "--shutdown-grace", "5"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    o = results["overload"]
    # 12 requests of 64 sentences against --max-queue 256: some are refused whatever the speed.
    assert sum(o["flood_statuses"].values()) == 12 and o["flood_statuses"].get("503", 0) >= 1
    for good in (o["good_during_flood"], o["good_after_flood"]):
        # How soon is the script's measurement to report, not a bound to test on a busy machine.
        assert good["statuses"][-1] == 200 and good["equals_offline"], good
        assert set(good["statuses"]) <= {200, 503}, good
    assert o["sigterm_exit_s"] is not None and o["shutdown_grace_s"] == 5
    assert set(o["sigterm_flood_statuses"]) <= {"200", "503"}, o  # answered, or refused after the grace
    assert results["fuzz"]["server_5xx"] == 0 and results["rounds"] == []
    assert "Overload: 12 clients" in (tmp_path / "out" / "results.md").read_text()
