#!/usr/bin/env python3
"""Load test of `seq2seq serve` on this machine (loopback only, bounded in count and time).

1. Offline: the run's Translator translates INPUT in one process (what `seq2seq translate`
   does), timed; its lines are the reference outputs.
2. A service is started on a free loopback port with the same model and beam, and for each
   client count (default 1, 8, 32) that many threads send the lines of INPUT one per request
   (keep-alive connections): throughput (sent/s), p50 and p99 latency, and how many answers
   differ from the offline line. With 1 client every request is decoded alone.
3. Fuzz: --fuzz requests, most of them bad (invalid JSON, deeply nested JSON, wrong types,
   missing or unknown fields, oversized bodies, too many or too long sentences, lone surrogates,
   bad options), mixed with good ones from 8 threads: every good answer must equal the offline
   line, every bad one must be a 4xx; the service's resident memory is read before and after.
4. --overload (instead of 2): a flood of --flood-clients clients, each sending --flood-sentences
   long sentences (--flood-join input lines each) at the largest allowed beam and giving up
   after --give-up seconds; one good request during the flood and one after it (each retried as
   its 503's Retry-After says): their status, latency and retries; the flood's statuses; the
   service's memory before and after; then a second flood that does not give up, SIGTERM in the
   middle of it (the service runs with --shutdown-grace: it answers what it accepted for that long,
   then refuses the rest), that flood's statuses, and the seconds until the service has exited.

    python scripts/serve_load.py --model runs/multi30k_en_de --input data/multi30k/test_2016_flickr.en --out serve_load
    python scripts/serve_load.py --model runs/multi30k_en_de --input data/multi30k/test_2016_flickr.en \
        --out serve_overload --overload
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.data import read_lines  # noqa: E402
from seq2seq.decoding.translator import Translator  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Client:
    """One keep-alive connection."""
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
        self.conn.request("POST", "/translate", body=body, headers=headers or {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.getheader("connection", "").lower() == "close":
            self.conn.close()
        return response.status, json.loads(data) if data else {}


def start_service(models: list[str], port: int, beam: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "seq2seq", "serve", "--port", str(port), "--beam-size", str(beam), *extra]
    for m in models:
        cmd += ["--model", m]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("the service did not become ready within 60 s")


def load_round(port: int, lines: list[str], clients: int) -> dict:
    """Every line once, one per request, from `clients` threads; answers in line order."""
    answers: list[str | None] = [None] * len(lines)
    latencies: list[float] = []
    next_line = iter(range(len(lines)))
    lock = threading.Lock()

    def worker():
        client = Client(port)
        while True:
            with lock:
                i = next(next_line, None)
            if i is None:
                return
            start = time.perf_counter()
            status, answer = client.post(json.dumps({"text": lines[i]}).encode())
            elapsed = time.perf_counter() - start
            if status != 200:
                raise RuntimeError(f"line {i + 1}: status {status}: {answer}")
            with lock:
                latencies.append(elapsed)
                answers[i] = answer["translation"]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"clients": clients, "seconds": round(wall, 2), "sent_per_s": round(len(lines) / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
            "answers": answers}


def bad_request(rng: random.Random, line: str) -> bytes:
    """One bad request body."""
    kinds = [
        lambda: b"{" + line.encode()[:20],
        lambda: bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
        lambda: json.dumps([line]).encode(),
        lambda: json.dumps({"txt": line}).encode(),
        lambda: b"{}",
        lambda: json.dumps({"text": line, "texts": [line]}).encode(),
        lambda: json.dumps({"text": rng.choice([3, None, 1.5, [line], {"a": 1}, True])}).encode(),
        lambda: json.dumps({"texts": line}).encode(),
        lambda: json.dumps({"texts": [line, rng.choice([None, 4, [line]])]}).encode(),
        lambda: json.dumps({"text": line, "beam_size": rng.choice([0, -1, 1000, "5", 2.5, True])}).encode(),
        lambda: json.dumps({"text": line, "nbest": rng.choice([0, 100, "x"])}).encode(),
        lambda: json.dumps({"text": line, "attention": "yes"}).encode(),
        lambda: json.dumps({"texts": [line] * 1000}).encode(),
        lambda: json.dumps({"text": "x" * 100_000}).encode(),
        lambda: b"[" * 300_000 + b"]" * 300_000,  # deeply nested, under the body limit
        lambda: b'{"text": ' + b"{\"a\": " * 100_000 + b"1" + b"}" * 100_000 + b"}",
        lambda: b'{"text": "\\ud800 ' + line.encode()[:10] + b'"}',
        lambda: b" " * 2_000_000,
    ]
    return rng.choice(kinds)()


def fuzz(port: int, pid: int, lines: list[str], offline: list[str], count: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    plan = [(rng.random() < 0.2, rng.randrange(len(lines))) for _ in range(count)]
    statuses: dict[int, int] = {}
    wrong_good, lock = [], threading.Lock()
    rss = {"before_mb": round(rss_mb(pid), 1)}
    chunks = [plan[i::8] for i in range(8)]

    def worker(part, worker_seed):
        local = random.Random(worker_seed)
        client = Client(port)
        for good, i in part:
            if good:
                body = json.dumps({"text": lines[i]}).encode()
            else:
                body = bad_request(local, lines[i])
            try:
                status, answer = client.post(body)
            except (http.client.HTTPException, OSError):
                client = Client(port)  # the service closed the connection after refusing a body
                status, answer = -1, {}
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if good and (status != 200 or answer.get("translation") != offline[i]):
                    wrong_good.append(i)

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(worker, part, seed * 100 + n) for n, part in enumerate(chunks)]:
            f.result()
    rss["after_mb"] = round(rss_mb(pid), 1)
    return {"requests": count, "good": sum(g for g, _ in plan), "seconds": round(time.perf_counter() - start, 1),
            "statuses": dict(sorted(statuses.items())), "good_answered_wrong": len(wrong_good),
            "server_5xx": sum(n for s, n in statuses.items() if s >= 500), "rss": rss}


def post_once(port: int, body: bytes, timeout: float) -> tuple[int | str, float, dict, dict]:
    """One request on a fresh connection: status (or "gave up" after `timeout` seconds, or
    "error"), seconds, headers and JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.perf_counter()
    try:
        conn.request("POST", "/translate", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return (response.status, time.perf_counter() - start, dict(response.getheaders()),
                json.loads(data) if data else {})
    except TimeoutError:
        return "gave up", time.perf_counter() - start, {}, {}
    except (http.client.HTTPException, OSError) as e:
        return "error", time.perf_counter() - start, {}, {"error": repr(e)}
    finally:
        conn.close()  # a client that gives up closes its connection: the service sees it go


def good_request(port: int, line: str, expected: str, *, patience: float = 60.0) -> dict:
    """One good sentence, retried as each 503's Retry-After says: statuses, seconds, answer check."""
    start = time.perf_counter()
    statuses, first_seconds = [], None
    while True:
        status, seconds, headers, answer = post_once(port, json.dumps({"text": line}).encode(), timeout=patience)
        statuses.append(status)
        first_seconds = seconds if first_seconds is None else first_seconds
        if status != 503 or time.perf_counter() - start > patience:
            break
        time.sleep(float(headers.get("retry-after", 1)))
    return {"statuses": statuses, "first_answer_s": round(first_seconds, 2),
            "until_200_s": round(time.perf_counter() - start, 2) if status == 200 else None,
            "retries": len(statuses) - 1, "equals_offline": status == 200 and answer.get("translation") == expected}


def flood_body(lines: list[str], rng: random.Random, sentences: int, join: int, beam: int, max_chars: int) -> bytes:
    texts = [" ".join(rng.choice(lines) for _ in range(join))[:max_chars] for _ in range(sentences)]
    return json.dumps({"texts": texts, "beam_size": beam}).encode()


def overload(args, proc: subprocess.Popen, port: int, lines: list[str], offline: list[str]) -> dict:
    """The flood, the good requests, memory, and SIGTERM in a second flood (see the module's 4.)."""
    rng = random.Random(1)
    bodies = [flood_body(lines, rng, args.flood_sentences, args.flood_join, args.flood_beam, args.max_chars)
              for _ in range(args.flood_clients)]
    good = min(range(len(lines)), key=lambda i: len(lines[i]))  # a short sentence: the client's own request
    result: dict = {"flood_clients": args.flood_clients, "flood_sentences": args.flood_sentences,
                    "flood_beam": args.flood_beam, "give_up_s": args.give_up, "shutdown_grace_s": args.shutdown_grace,
                    "rss": {"before_mb": round(rss_mb(proc.pid), 1)}}
    with ThreadPoolExecutor(args.flood_clients + 1) as pool:
        start = time.perf_counter()
        flood = [pool.submit(post_once, port, body, args.give_up) for body in bodies]
        time.sleep(min(1.0, args.give_up / 2))
        result["good_during_flood"] = good_request(port, lines[good], offline[good])
        statuses: dict = {}
        for f in flood:
            status = f.result()[0]
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        result["flood_seconds"] = round(time.perf_counter() - start, 2)
    result["flood_statuses"] = dict(sorted(statuses.items()))
    result["good_after_flood"] = good_request(port, lines[good], offline[good])
    result["rss"]["after_mb"] = round(rss_mb(proc.pid), 1)

    # SIGTERM while a second flood, whose clients wait, is queued and being decoded.
    with ThreadPoolExecutor(args.flood_clients) as pool:
        second = [pool.submit(post_once, port, body, 300) for body in bodies]
        time.sleep(1.0)
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
            result["sigterm_exit_s"] = round(time.perf_counter() - start, 2)
        except subprocess.TimeoutExpired:
            result["sigterm_exit_s"] = None  # still running after 120 s
            proc.kill()
        statuses = {}
        for f in second:
            status = f.result()[0]
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    result["sigterm_flood_statuses"] = dict(sorted(statuses.items()))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="run directories (several: an ensemble); or --model")
    parser.add_argument("--model", action="append", default=[], help="a run directory (repeatable: an ensemble)")
    parser.add_argument("--input", type=Path, required=True, help="sentences, one per line")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--fuzz", type=int, default=3000, help="fuzz requests (0: none)")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for seq2seq serve")
    parser.add_argument("--overload", action="store_true", help="the overload run (4.) instead of the client rounds")
    parser.add_argument("--flood-clients", type=int, default=150)
    parser.add_argument("--flood-sentences", type=int, default=64, help="sentences per flood request (default: 64)")
    parser.add_argument("--flood-join", type=int, default=4, help="input lines joined into one long flood sentence")
    parser.add_argument("--flood-beam", type=int, default=16, help="the flood's beam (default: 16, serve's --max-beam)")
    parser.add_argument("--max-chars", type=int, default=2000, help="serve's --max-chars: flood sentences are cut to it")
    parser.add_argument("--give-up", type=float, default=3.0, help="seconds after which a flood client gives up")
    parser.add_argument("--shutdown-grace", type=float, default=10.0,
                        help="serve's --shutdown-grace: the SIGTERM part waits about this long (default: 10)")
    args = parser.parse_args()
    args.models = args.models + args.model
    if not args.models:
        parser.error("give a run directory: --model RUN")
    args.out.mkdir(parents=True, exist_ok=True)
    lines, _ = read_lines(args.input)

    translator = Translator.load(args.models[0] if len(args.models) == 1 else args.models, device="cpu")
    translator.translate(lines[:64], beam_size=args.beam_size)  # first-call costs out of the timing
    start = time.perf_counter()
    offline = list(translator.translate_stream(iter(lines), beam_size=args.beam_size))
    offline_seconds = time.perf_counter() - start
    del translator
    results = {"lines": len(lines), "beam_size": args.beam_size, "models": args.models,
               "offline": {"seconds": round(offline_seconds, 2), "sent_per_s": round(len(lines) / offline_seconds, 1)},
               "rounds": []}

    port = free_port()
    proc = start_service(args.models, port, args.beam_size, ["--shutdown-grace", str(args.shutdown_grace),
                                                             *args.serve_arg])
    try:
        load_round(port, lines[:64], 8)  # warm-up
        for clients in [] if args.overload else args.clients:
            r = load_round(port, lines, clients)
            r["differ_from_offline"] = sum(a != b for a, b in zip(r.pop("answers"), offline))
            results["rounds"].append(r)
            print(json.dumps(r), flush=True)
        if args.fuzz:
            results["fuzz"] = fuzz(port, proc.pid, lines, offline, args.fuzz)
            print(json.dumps(results["fuzz"]), flush=True)
        if args.overload:
            results["overload"] = overload(args, proc, port, lines, offline)
            print(json.dumps(results["overload"]), flush=True)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    write(args.out, results)
    return 0


def write(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    offline = results["offline"]["sent_per_s"]
    alone = next((r["sent_per_s"] for r in results["rounds"] if r["clients"] == 1), None)
    lines = [f"{results['lines']} lines, one per request, beam {results['beam_size']}; models: "
             f"{', '.join(results['models'])}. Offline (Translator.translate_stream, one process): "
             f"{offline} sent/s."]
    if results["rounds"]:
        lines += ["", "| clients | sent/s | of offline | of 1 client | p50 ms | p99 ms | answers differing from offline |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rounds"]:
        of_alone = "" if alone is None else f"{r['sent_per_s'] / alone:.1f}x"
        lines.append(f"| {r['clients']} | {r['sent_per_s']} | {r['sent_per_s'] / offline:.0%} | {of_alone} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['differ_from_offline']} |")
    if "fuzz" in results:
        f = results["fuzz"]
        lines += ["", f"Fuzz: {f['requests']} requests ({f['good']} good) from 8 threads in {f['seconds']} s; "
                      f"statuses {f['statuses']}; 5xx: {f['server_5xx']}; good requests answered wrong: "
                      f"{f['good_answered_wrong']}; service RSS {f['rss']['before_mb']} MB before, "
                      f"{f['rss']['after_mb']} MB after."]
    if "overload" in results:
        o = results["overload"]
        during, after = o["good_during_flood"], o["good_after_flood"]
        lines += ["", f"Overload: {o['flood_clients']} clients, each sending {o['flood_sentences']} long sentences at "
                      f"beam {o['flood_beam']} and giving up after {o['give_up_s']} s: their statuses "
                      f"{o['flood_statuses']} (flood over in {o['flood_seconds']} s).",
                  "",
                  "| one good sentence | statuses | first answer s | until 200 s | equals offline |",
                  "|---|---|---:|---:|---|"]
        for name, g in (("during the flood", during), ("after the flood", after)):
            lines.append(f"| {name} | {', '.join(map(str, g['statuses']))} | {g['first_answer_s']} | "
                         f"{g['until_200_s']} | {g['equals_offline']} |")
        lines += ["", f"Service RSS {o['rss']['before_mb']} MB before the flood, {o['rss']['after_mb']} MB after. "
                      f"SIGTERM during a second flood (clients waiting; --shutdown-grace {o['shutdown_grace_s']:g} s): "
                      f"exited after {o['sigterm_exit_s']} s; that flood's statuses {o['sigterm_flood_statuses']}."]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
