"""The export folder as a static in-browser translator, in headless Debian chromium: its
translations equal `seq2seq translate --model DIR`, and it requests nothing outside its origin."""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from conftest import NEEDS_CHROMIUM, have_chromium, missing_page_library, requires  # noqa: E402
from seq2seq.deploy.export import copy_page, export_run  # noqa: E402

# The browser test needs all three; under CI a missing one fails it (conftest.requires).
needs_chromium = requires(have_chromium(), NEEDS_CHROMIUM)
needs_selenium = requires(importlib.util.find_spec("selenium") is not None,
                          "needs selenium, the browser tests' Python driver (the dev extra: scripts/setup.sh)")
MISSING_LIBRARY = missing_page_library()
needs_page_libraries = requires(MISSING_LIBRARY is None, f"needs the page's npm libraries: {MISSING_LIBRARY} is "
                                                         f"missing (npm ci --prefix web)")


def serve(folder: Path) -> tuple[subprocess.Popen, int]:
    """A static file server in `folder` on a free port of 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, port


def open_page(folder: Path, host: str = "127.0.0.1"):
    """A static file server in `folder` and headless chromium on its index.html. A `host` other
    than 127.0.0.1 is a name that chromium resolves to 127.0.0.1: the page's origin is then not a
    secure context (only https, localhost and loopback addresses are), so crypto.subtle is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    server, port = serve(folder)
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    if host != "127.0.0.1":
        options.add_argument(f"--host-resolver-rules=MAP {host} 127.0.0.1")
        # Chromium tries https first for a plain http name; our server speaks http only.
        options.add_argument("--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable")
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=DriverService(executable_path=shutil.which("chromedriver")), options=options)
    return server, driver, f"http://{host}:{port}/"


def load_page(driver, url: str) -> str:
    """Open `url` and wait until the page has loaded its model or failed; returns its state."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    state = lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731
    driver.get(url)
    WebDriverWait(driver, 120).until(lambda d: state(d) != "loading")
    return state(driver)


@needs_chromium
@needs_selenium
@needs_page_libraries
def test_the_page_translates_as_translate_does_and_stays_on_its_origin(trained_run, synthetic_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    folder = tmp_path / "export"
    export_run(trained_run, folder)
    assert (folder / "index.html").is_file(), "the libraries were found, so the export must include the page"
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:6] + ["", "  ka zzq ¤ 漢字 lo  "]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = {}
    for beam in (1, 3):
        proc = subprocess.run([sys.executable, "-m", "seq2seq", "translate", "--model", str(folder), "--input",
                               str(tmp_path / "in.txt"), "--beam-size", str(beam), "--quiet"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        expected[beam] = proc.stdout.split("\n")[:len(lines)]
    server, driver, url = open_page(folder)
    try:
        driver.get(url + "index.html")
        state = lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731
        WebDriverWait(driver, 120).until(lambda d: state(d) != "loading")
        assert state(driver) == "ready", driver.find_element(By.ID, "error").text
        # 127.0.0.1 is a secure context: the files were checked with Web Crypto.
        assert driver.execute_script("return window.seq2seq.checksums") == {"verifiedWith": "Web Crypto", "why": None}
        for beam in (1, 3):
            box = driver.find_element(By.ID, "source")
            driver.execute_script("arguments[0].value = arguments[1];", box, "\n".join(lines))
            Select(driver.find_element(By.ID, "beam")).select_by_value(str(beam))
            driver.find_element(By.ID, "translate").click()
            WebDriverWait(driver, 120).until(lambda d: state(d) in ("ready", "error"))
            got = [e.get_attribute("data-translation") for e in driver.find_elements(By.CSS_SELECTOR, "#output .line")]
            assert got == expected[beam]
        assert got[-2] == "" and len(driver.find_elements(By.CSS_SELECTOR, "#output table.heat")) >= 1
        requested = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert requested and all(u.startswith(url) or u.startswith("data:") for u in requested), requested
    finally:
        driver.quit()
        server.terminate()
        server.wait()


def test_without_the_libraries_the_export_leaves_the_page_out(tmp_path, monkeypatch):
    import seq2seq.deploy.export as export
    monkeypatch.delenv("SEQ2SEQ_WEB_MODULES", raising=False)
    real = Path(export.__file__).parent / "web" / "assets.json"
    fake = tmp_path / "web"
    shutil.copytree(real.parent, fake)
    (fake / "assets.json").write_text(real.read_text().replace('"web/node_modules"', '"web/no_such_folder"'))
    monkeypatch.setattr(export, "__file__", str(fake.parent / "export.py"))
    (tmp_path / "out").mkdir()
    assert copy_page(tmp_path / "out") is False
    assert not any((tmp_path / "out").iterdir())


def installed_like_pip(tmp_path, monkeypatch) -> dict:
    """export.py as a pip install has it: the package data beside it, no repository (and so no
    web/node_modules) above it; returns web/assets.json."""
    import seq2seq.deploy.export as export
    real = Path(export.__file__).parent / "web"
    package = tmp_path / "site-packages" / "seq2seq" / "deploy"
    shutil.copytree(real, package / "web")
    monkeypatch.setattr(export, "__file__", str(package / "export.py"))
    (tmp_path / "out").mkdir()
    return json.loads((real / "assets.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("variable", [None, "empty"])
def test_without_the_libraries_the_warning_says_what_to_install_and_where(tmp_path, monkeypatch, variable):
    import seq2seq.deploy.export as export
    assets = installed_like_pip(tmp_path, monkeypatch)
    if variable is None:
        monkeypatch.delenv("SEQ2SEQ_WEB_MODULES", raising=False)
        looked_in = tmp_path / "site-packages" / assets["libraries"]["node_modules"]
    else:
        looked_in = tmp_path / "empty" / "node_modules"
        monkeypatch.setenv("SEQ2SEQ_WEB_MODULES", str(looked_in))
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    export.log.addHandler(handler)  # caplog misses it once a training run has stopped "seq2seq" propagating
    try:
        assert copy_page(tmp_path / "out") is False
    finally:
        export.log.removeHandler(handler)
    [message] = [r.getMessage() for r in records]
    pinned = " ".join(f"{name}@{version}" for name, version in assets["libraries"]["versions"].items())
    assert "@sctg/sentencepiece-js@" in pinned and "onnxruntime-web@" in pinned
    assert "\n" not in message
    assert f"npm install {pinned} --prefix DIR" in message, message
    assert "SEQ2SEQ_WEB_MODULES=DIR/node_modules seq2seq export" in message, message
    assert f"{looked_in}" in message and "onnxruntime-web/dist/ort.wasm.min.mjs is missing" in message, message
    assert not any((tmp_path / "out").iterdir())


def test_the_libraries_are_taken_from_SEQ2SEQ_WEB_MODULES(tmp_path, monkeypatch):
    assets = installed_like_pip(tmp_path, monkeypatch)
    modules = tmp_path / "elsewhere" / "node_modules"
    for name, source in assets["libraries"]["files"].items():
        (modules / source).parent.mkdir(parents=True, exist_ok=True)
        (modules / source).write_text(f"stands in for {name}", encoding="utf-8")
    monkeypatch.setenv("SEQ2SEQ_WEB_MODULES", str(modules))
    assert copy_page(tmp_path / "out") is True
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(assets["page"] + list(assets["libraries"]["files"]))
    for name in assets["libraries"]["files"]:
        assert (tmp_path / "out" / name).read_text(encoding="utf-8") == f"stands in for {name}"


# ---- a tagged model, outside a secure context ----

TAG = "<bt>"


@pytest.fixture(scope="module")
def tagged_export(synthetic_dir, tmp_path_factory) -> tuple[Path, int]:
    """A model trained on a corpus half of which is tagged <bt>, with its output layer's bias for the
    tag piece raised until every translation would write it, exported with the page; the folder and
    the tag's target id."""
    from conftest import tiny_config_dict
    from seq2seq.config import config_from_dict
    from seq2seq.run.checkpoint import load_checkpoint, save_checkpoint
    from seq2seq.run.rundir import open_run
    from seq2seq.training.loop import train
    root = tmp_path_factory.mktemp("tagged")
    raw = tiny_config_dict(synthetic_dir, training={"max_epochs": 1, "max_steps": 40})
    raw["data"]["train"] = [{"path": str(synthetic_dir / "train")}, {"path": str(synthetic_dir / "train"), "tag": TAG}]
    train(config_from_dict(raw), root / "run", quiet=True)
    tag = open_run(root / "run").tgt_tok.piece_to_id("\u2581" + TAG)
    checkpoint = load_checkpoint(root / "run" / "best.pt")
    # +20 makes the tag every step's favourite, yet keeps the other pieces' log-probabilities small
    # enough (about -20) that float32 still ranks them as finely as in an ordinary model.
    checkpoint["model"]["decoder.output.bias"][tag] += 20.0
    save_checkpoint(root / "run" / "best.pt", {k: v for k, v in checkpoint.items()
                                               if k not in ("format", "format_version")})
    export_run(root / "run", root / "export")
    return root / "export", tag


def translate_in_page(driver, lines: list[str], beam: int) -> list[dict]:
    """window.seq2seq.translateDetailed in the page: text and output pieces per line."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.seq2seq.translateDetailed(arguments[0], {beamSize: arguments[1]})"
        "  .then((ts) => done(ts.map((t) => ({text: t.text, pieces: t.tgtPieces}))), (e) => done(String(e)));",
        lines, beam)


@needs_chromium
@needs_selenium
@needs_page_libraries
def test_a_tagged_model_s_page_bans_the_tag_as_translate_does_outside_a_secure_context(tagged_export, synthetic_dir,
                                                                                        tmp_path):
    from selenium.webdriver.common.by import By
    from seq2seq.decoding.search import translate_ids
    from seq2seq.decoding.translator import Translator
    folder, tag = tagged_export
    assert json.loads((folder / "manifest.json").read_text())["banned"] == [tag]
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:8]
    translator = Translator.load(folder, device="cpu")
    unbanned = translate_ids(translator.model.inner, translator.encode_sources(lines), beam_size=1, batch_size=8,
                             alpha=0.0, max_len_ratio=1.5, max_len_offset=5)
    assert all(tag in hyps[0].tokens for hyps in unbanned), "without the ban every translation would write the tag"
    expected = {beam: translator.translate(lines, beam_size=beam) for beam in (1, 3)}
    assert not any(TAG in text for texts in expected.values() for text in texts)
    server, driver, url = open_page(folder, host="seq2seq.test")
    servers = [server]
    try:
        driver.set_script_timeout(120)
        assert load_page(driver, url + "index.html") == "ready", driver.find_element(By.ID, "error").text
        # Not a secure context, so no Web Crypto: the files were checked with the pinned js-sha256.
        assert driver.execute_script("return window.isSecureContext") is False
        assert driver.execute_script("return window.seq2seq.checksums") == {"verifiedWith": "js-sha256", "why": None}
        assert "js-sha256" in driver.find_element(By.ID, "checksums").text
        for beam in (1, 3):
            got = translate_in_page(driver, lines, beam)
            assert [t["text"] for t in got] == expected[beam], f"beam {beam}"
            assert not any("\u2581" + TAG in t["pieces"] for t in got)
        # js-sha256 really checks: a changed graph is refused by name ...
        changed = tmp_path / "changed"
        shutil.copytree(folder, changed)
        data = bytearray((changed / "decoder_step.onnx").read_bytes())
        data[len(data) // 2] ^= 1
        (changed / "decoder_step.onnx").write_bytes(bytes(data))
        server, port = serve(changed)
        servers.append(server)
        assert load_page(driver, f"http://seq2seq.test:{port}/index.html") == "error"
        assert "decoder_step.onnx: its SHA-256 differs" in driver.find_element(By.ID, "error").text
        # ... and a page that cannot check says so on the page, and still translates.
        unchecked = tmp_path / "unchecked"
        shutil.copytree(folder, unchecked)
        (unchecked / "sha256.min.mjs").unlink()
        server, port = serve(unchecked)
        servers.append(server)
        assert load_page(driver, f"http://seq2seq.test:{port}/index.html") == "ready"
        assert driver.execute_script("return window.seq2seq.checksums.verifiedWith") is None
        assert "could not be checked" in driver.find_element(By.ID, "checksums").text
        assert [t["text"] for t in translate_in_page(driver, lines, 1)] == expected[1]
    finally:
        driver.quit()
        for server in servers:
            server.terminate()
            server.wait()


@requires(shutil.which("node") is not None and (Path(__file__).resolve().parents[1] / "web" / "node_modules" /
                                               "js-sha256").is_dir(),
          "needs node and the page's npm libraries (npm ci --prefix web)")
def test_the_checksums_outside_secure_contexts_in_node():
    """web/test/checksum.test.mjs: js-sha256 gives Web Crypto's digests, a page with neither says
    why, and file lists with paths outside the folder are refused."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["node", "--test", str(root / "web" / "test" / "checksum.test.mjs")], capture_output=True,
                          text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_both_pages_draw_attention_with_one_heatmap():
    # The service's page (/) and the exported page import the same module; neither keeps a copy.
    import seq2seq.deploy as deploy
    here = Path(deploy.__file__).parent
    service, exported = (here / "serve_page.html").read_text(), (here / "web" / "translator.js").read_text()
    assert 'from "/heatmap.js"' in service and 'from "./heatmap.js"' in exported
    assert "function heatmap" not in service and "function heatmap" not in exported
    assert "export function heatmap" in (here / "web" / "heatmap.js").read_text()
    assert "heatmap.js" in json.loads((here / "web" / "assets.json").read_text())["page"]
