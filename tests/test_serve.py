"""seq2seq serve: answers equal offline translation, concurrent requests share batches and each
gets its own answer exactly once, bad requests get a 4xx that says why and harm nothing,
/health waits for the model, SIGTERM drains requests in flight, and the web page works in a
real (headless) browser."""
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from seq2seq.batching import Batcher, Options  # noqa: E402
from seq2seq.serve import Limits, Service, build_app  # noqa: E402
from seq2seq.translator import Translation, Translator  # noqa: E402


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
    broken = Service([str(tmp_path / "no_run")], load_options={"device": "cpu"}, limits=Limits(), beam_size=None,
                     max_batch=8, max_wait=0.001)
    with TestClient(build_app(broken)) as c:
        assert broken.loaded.wait(60)
        answer = c.get("/health")
        assert answer.status_code == 503 and "could not be loaded" in answer.json()["error"]


class Recording:
    """A translator stand-in that records its batches and 'translates' by upper-casing."""
    def __init__(self):
        self.batches = []

    def translate_detailed(self, lines, *, nbest, beam_size, return_attention):
        self.batches.append((len(lines), beam_size))
        time.sleep(0.01)  # decoding takes time, so requests pile up meanwhile
        return [[Translation(line.upper(), 0.0, 0.0, [], [], None)] for line in lines]


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer():
    fake = Recording()
    batcher = Batcher(fake, max_batch=32, max_wait=0.005)
    requests = [[f"r{i} s{j}" for j in range(i % 3 + 1)] for i in range(120)]
    options = [Options(5 if i % 4 else 2, 1, False) for i in range(120)]
    with ThreadPoolExecutor(32) as pool:
        futures = list(pool.map(lambda i: batcher.submit(requests[i], options[i]), range(120)))
        answers = [f.result(timeout=30) for f in futures]
    batcher.close()
    for texts, answer in zip(requests, answers):
        assert [hyps[0].text for hyps in answer] == [t.upper() for t in texts]
    assert sum(n for n, _ in fake.batches) == sum(len(r) for r in requests)  # every sentence once
    assert len(fake.batches) < 60  # requests were decoded together
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
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stdout.read())


def post(url: str, payload: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(url + "/translate", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


def test_sigterm_answers_the_requests_in_flight_then_exits(trained_run, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:64]
    proc, url = start_server(trained_run)
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(post, url, {"texts": lines, "beam_size": 16}) for _ in range(6)]
            time.sleep(0.3)  # the requests are in flight (six 64-sentence beam-16 batches take a while)
            in_flight = sum(not f.done() for f in futures)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=120) for f in futures]
        assert in_flight >= 1
        assert all(len(a["translations"]) == len(lines) for a in answers)
        # uvicorn ends by re-raising the signal once everything is answered.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Finished server process" in proc.stdout.read()
    finally:
        proc.kill()


@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                    reason="Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                           "chromium-driver)")
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
