"""The export folder as a static in-browser translator, in headless Debian chromium: its
translations equal `seq2seq translate --model DIR`, and it requests nothing outside its origin."""
from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("selenium")

from seq2seq.deploy.export import copy_page, export_run  # noqa: E402

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")


def open_page(folder: Path):
    """A static file server in `folder` and headless chromium on its index.html."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=DriverService(executable_path=shutil.which("chromedriver")), options=options)
    return server, driver, f"http://127.0.0.1:{port}/"


@needs_chromium
def test_the_page_translates_as_translate_does_and_stays_on_its_origin(trained_run, synthetic_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    folder = tmp_path / "export"
    export_run(trained_run, folder)
    if not (folder / "index.html").is_file():
        pytest.skip("the page's JavaScript libraries are not installed (npm ci --prefix web)")
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
