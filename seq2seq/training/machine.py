"""How many CPU threads training uses, and whether they get the cores they need. On a CPU whose
cores another program already keeps busy, PyTorch's threads wait for each other at every
operator: with two threads on a two-core machine that had one core taken, training ran 50 times
slower than on the idle machine, and 30 times slower than with one thread. So with
training.num_threads left out a run takes as many threads as there are idle cores when it starts,
and it says so when its threads later get far fewer cores than they need."""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("seq2seq")

# A run whose threads get less than this share of a core each is oversubscribed (an idle
# machine gives a CPU run about 0.9 and more; measured: docs/measurements/2026-12-08/threads).
LOW_SHARE = 0.6


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def idle_cores(window: float = 0.3) -> float | None:
    """How many of the machine's cores were idle over `window` seconds (Linux's /proc/stat), or
    None where that cannot be read."""
    def read() -> list[int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = f.readline().split()
        except OSError:
            return None
        return [int(x) for x in fields[1:]] if fields and fields[0] == "cpu" else None

    first = read()
    time.sleep(window)
    second = read()
    if first is None or second is None:
        return None
    delta = [b - a for a, b in zip(first, second)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    if total <= 0:
        return None
    return (delta[3] + delta[4]) / total * (os.cpu_count() or 1)


def choose_threads(configured: int | None) -> tuple[int, str]:
    """The thread count for a CPU run, and why: training.num_threads when set, else
    OMP_NUM_THREADS when set, otherwise the cores idle right now (at least 1, at most those this process may use), divided among the
    processes torchrun started on this machine."""
    if configured is not None:
        return configured, "training.num_threads"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        # Whoever launched the run chose already (torchrun and batch systems set it).
        return int(os.environ["OMP_NUM_THREADS"]), "training.num_threads: null; OMP_NUM_THREADS"
    # Processes that torchrun starts on this machine share its cores.
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    usable, idle = usable_cores(), idle_cores()
    free = usable if idle is None else min(usable, int(idle + 0.5))
    threads = max(1, free // processes)
    seen = "" if idle is None else f", about {idle:.1f} of the machine's idle"
    shared = f", shared by {processes} processes" if processes > 1 else ""
    return threads, f"training.num_threads: null; {usable} usable cores{seen}{shared}"


class CoreShare:
    """Watches the CPU time the process gets against the threads it runs: asked at every log
    line, it warns once when the threads got far less than a core each."""

    def __init__(self, threads: int):
        self.threads, self.warned = threads, False
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def check(self, step: int) -> float:
        """The share of a core each thread got since the last call (logged once when low)."""
        cpu, wall = time.process_time(), time.perf_counter()
        share = (cpu - self.cpu) / max(wall - self.wall, 1e-9) / self.threads
        self.cpu, self.wall = cpu, wall
        if share < LOW_SHARE and not self.warned:
            self.warned = True
            fewer = max(1, int(share * self.threads + 0.5))
            advice = f", or train with fewer threads (--set training.num_threads={fewer})" if fewer < self.threads else ""
            log.warning("step %d: this run's %d thread(s) got %.1f cores between the last two log lines: the "
                        "machine is busy with other work, and training runs far below its speed. Stop the other "
                        "work%s", step, self.threads, share * self.threads, advice)
        return share
