"""PyTorch against onnxruntime, float32 and int8, on one test set, side by side; and the export's
in-browser page in headless chromium.

    python scripts/export_benchmark.py --model RUN --src test.en --ref test.de --out bench_out/export

Exports RUN twice (float32 and int8) into OUT, then for each backend (PyTorch float32, PyTorch
int8, onnxruntime float32, onnxruntime int8) and each of greedy and beam 5 decodes the whole
test set in a fresh process, --rounds times: sentences/s (decoding only, the model loaded), peak
RSS of the process, BLEU, and how many lines equal PyTorch float32's. With --browser, the int8
export's page in headless Debian chromium: time from opening the page to its first translation,
bytes the page downloads, and sentences/s (greedy and beam 5). Writes OUT/results.json and
OUT/results.md. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = {"pytorch-fp32": {}, "pytorch-int8": {"quantize": "int8"}, "onnx-fp32": {}, "onnx-int8": {}}


def decode_once(args) -> None:
    """Child process: load one backend, decode the test set, print one JSON line."""
    import torch
    from seq2seq.decoding.translator import Translator
    torch.set_num_threads(args.threads)
    options = BACKENDS[args.backend]
    model = str(Path(args.out) / args.backend) if args.backend.startswith("onnx") else args.model
    translator = Translator.load(model, device="cpu", **options)
    lines = Path(args.src).read_text(encoding="utf-8").splitlines()
    start = time.perf_counter()
    hyps = translator.translate(lines, beam_size=args.beam, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    Path(args.hyp).write_text("\n".join(hyps) + "\n", encoding="utf-8")
    print(json.dumps({"seconds": seconds, "sent_per_s": len(lines) / seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def model_size(args, backend: str) -> int:
    """Bytes of the model files a deployment of this backend ships (weights, not runtimes)."""
    from seq2seq.run.rundir import RunDir
    if backend.startswith("onnx"):
        folder = Path(args.out) / backend
        return sum((folder / n).stat().st_size for n in ("encoder.onnx", "decoder_step.onnx"))
    return RunDir(args.model).checkpoint().stat().st_size


def open_page(folder: Path):
    """A static file server in `folder` and headless chromium for its index.html: (server, driver, url)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    with socket.socket() as s:  # a free port for the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    # no sandbox (root in containers), no background traffic that would count as the page's bytes
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=DriverService(executable_path=shutil.which("chromedriver")), options=options)
    return server, driver, f"http://127.0.0.1:{port}/"


def browser(args, folder: Path, lines: list[str]) -> dict:
    """The page of `folder` in headless chromium: load time to the first translation, bytes, speed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    server, driver, url = open_page(folder)
    try:
        start = time.perf_counter()
        driver.get(url + "index.html")
        WebDriverWait(driver, 300).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "loading")
        run = ("const done = arguments[arguments.length - 1];"
               "const t = performance.now();"
               "window.seq2seq.translate(arguments[0], {beamSize: arguments[1]})"
               ".then(out => done({out, ms: performance.now() - t}), e => done({error: String(e)}));")
        first = driver.execute_async_script(run, lines[:1], 1)
        to_first = time.perf_counter() - start
        if "error" in first:
            raise RuntimeError(first["error"])
        driver.set_script_timeout(3600)
        result = {"seconds_to_first_translation": to_first}
        for beam in (1, 5):
            got = driver.execute_async_script(run, lines, beam)
            result[f"beam{beam}"] = {"sent_per_s": len(lines) / (got["ms"] / 1000), "hyps": got["out"]}
        entries = driver.execute_script(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".map(e => [e.name, e.transferSize || e.encodedBodySize || 0])")
        result["bytes"] = sum(size for _, size in entries)
        result["outside_origin"] = [name for name, _ in entries if not name.startswith(url)]
        return result
    finally:
        driver.quit()
        server.terminate()
        server.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained run directory")
    p.add_argument("--src", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--browser", action="store_true", help="also measure the int8 export's page in chromium")
    p.add_argument("--skip-export", action="store_true", help="reuse the exports already in OUT")
    p.add_argument("--backend", help=argparse.SUPPRESS)  # child process mode
    p.add_argument("--beam", type=int, help=argparse.SUPPRESS)
    p.add_argument("--hyp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.backend:
        return decode_once(args)

    from seq2seq.deploy.export import export_run
    from seq2seq.metrics import score_all
    bleu = lambda hyps, refs: score_all(hyps, refs)["bleu"]  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_export:
        export_run(args.model, out / "onnx-fp32", page=False)
        export_run(args.model, out / "onnx-int8", quantize="int8")
    lines = Path(args.src).read_text(encoding="utf-8").splitlines()
    refs = Path(args.ref).read_text(encoding="utf-8").splitlines()
    results: dict = {"model": args.model, "test": args.src, "threads": args.threads, "rounds": args.rounds,
                     "cpu": cpu_name(), "backends": {}}
    for backend in BACKENDS:
        entry = results["backends"][backend] = {"model_bytes": model_size(args, backend)}
        for beam in (1, 5):
            runs = []
            hyp = out / f"{backend}.beam{beam}.hyp"
            for _ in range(args.rounds):
                proc = subprocess.run([sys.executable, __file__, "--model", args.model, "--src", args.src, "--ref",
                                       args.ref, "--out", args.out, "--threads", str(args.threads), "--batch-size",
                                       str(args.batch_size), "--backend", backend, "--beam", str(beam),
                                       "--hyp", str(hyp)], capture_output=True, text=True, check=True)
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            hyps = hyp.read_text(encoding="utf-8").splitlines()
            entry[f"beam{beam}"] = {"sent_per_s": [round(r["sent_per_s"], 1) for r in runs],
                                    "median_sent_per_s": round(statistics.median(r["sent_per_s"] for r in runs), 1),
                                    "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
                                    "bleu": round(bleu(hyps, refs), 2)}
            print(backend, f"beam {beam}", entry[f"beam{beam}"], flush=True)
    for beam in (1, 5):
        reference = (out / f"pytorch-fp32.beam{beam}.hyp").read_text(encoding="utf-8").splitlines()
        for backend, entry in results["backends"].items():
            hyps = (out / f"{backend}.beam{beam}.hyp").read_text(encoding="utf-8").splitlines()
            entry[f"beam{beam}"]["identical_to_pytorch_fp32"] = round(
                sum(a == b for a, b in zip(hyps, reference)) / len(reference), 4)
    if args.browser:
        page = browser(args, out / "onnx-int8", lines)
        for beam in (1, 5):
            hyps = page[f"beam{beam}"].pop("hyps")
            native = (out / f"onnx-int8.beam{beam}.hyp").read_text(encoding="utf-8").splitlines()
            page[f"beam{beam}"]["bleu"] = round(bleu(hyps, refs), 2)
            page[f"beam{beam}"]["identical_to_onnxruntime_int8"] = round(
                sum(a == b for a, b in zip(hyps, native)) / len(native), 4)
            page[f"beam{beam}"]["words_per_s"] = round(
                page[f"beam{beam}"]["sent_per_s"] * sum(len(h.split()) for h in hyps) / len(hyps), 1)
        folder = out / "onnx-int8"
        page["folder_bytes"] = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        results["browser"] = page
        print("browser", page, flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    rows = ["| backend | model MB | BLEU greedy / beam 5 | identical lines greedy / beam 5 | sent/s greedy | "
            "sent/s beam 5 | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for backend, e in results["backends"].items():
        g, b = e["beam1"], e["beam5"]
        rows.append(f"| {backend} | {e['model_bytes'] / 1e6:.1f} | {g['bleu']} / {b['bleu']} | "
                    f"{100 * g['identical_to_pytorch_fp32']:.1f} % / {100 * b['identical_to_pytorch_fp32']:.1f} % | "
                    f"{g['median_sent_per_s']} | {b['median_sent_per_s']} | {max(g['peak_rss_mb'], b['peak_rss_mb'])} |")
    text = f"CPU: {results['cpu']}; {results['threads']} threads; medians of {results['rounds']} rounds\n\n"
    text += "\n".join(rows) + "\n"
    if "browser" in results:
        b = results["browser"]
        text += (f"\nBrowser (headless chromium, int8 export): first translation {b['seconds_to_first_translation']:.1f} s "
                 f"after opening the page; {b['bytes'] / 1e6:.1f} MB downloaded; greedy {b['beam1']['sent_per_s']:.1f} "
                 f"sent/s (BLEU {b['beam1']['bleu']}), beam 5 {b['beam5']['sent_per_s']:.1f} sent/s "
                 f"({b['beam5']['words_per_s']} words/s, BLEU {b['beam5']['bleu']})\n")
    return text


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
