"""CPU threads for training (seq2seq/training/machine.py): as many as the machine has idle cores,
and a warning when the threads get far fewer cores than they need."""
import logging

from conftest import tiny_config_dict
from seq2seq.config import config_from_dict
from seq2seq.training import machine
from seq2seq.training.loop import train


def test_threads_follow_the_config_or_the_idle_cores(monkeypatch):
    assert machine.choose_threads(3) == (3, "training.num_threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the launcher's choice comes before a guess
    assert machine.choose_threads(None) == (3, "training.num_threads: null; OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(machine, "usable_cores", lambda: 8)
    monkeypatch.setattr(machine, "idle_cores", lambda: 3.2)  # another program holds about 5 cores
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    threads, why = machine.choose_threads(None)
    assert threads == 3 and "about 3.2" in why
    monkeypatch.setattr(machine, "idle_cores", lambda: 0.1)  # fully busy: still one thread
    assert machine.choose_threads(None)[0] == 1
    monkeypatch.setattr(machine, "idle_cores", lambda: 8.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's processes share the cores
    assert machine.choose_threads(None)[0] == 4
    monkeypatch.setattr(machine, "idle_cores", lambda: None)  # no /proc/stat: every usable core
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert machine.choose_threads(None)[0] == 8


def test_idle_cores_are_read_on_linux():
    idle = machine.idle_cores(window=0.05)
    assert idle is None or 0.0 <= idle <= machine.usable_cores() + 0.5


class Recorded(logging.Handler):
    """The records of the "seq2seq" logger, which training's set-up keeps from propagating."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_threads_that_get_too_little_of_a_core_are_warned_about_once(monkeypatch):
    clock = {"cpu": 0.0, "wall": 0.0}
    monkeypatch.setattr(machine.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(machine.time, "perf_counter", lambda: clock["wall"])
    share = machine.CoreShare(threads=2)
    caplog = Recorded()
    logging.getLogger("seq2seq").addHandler(caplog)
    try:
        clock.update(cpu=1.9, wall=1.0)
        assert abs(share.check(10) - 0.95) < 1e-9 and not caplog.records  # an idle machine
        clock.update(cpu=2.9, wall=2.0)  # one core's worth for two threads
        assert abs(share.check(20) - 0.5) < 1e-9
        clock.update(cpu=3.9, wall=3.0)
        share.check(30)
    finally:
        logging.getLogger("seq2seq").removeHandler(caplog)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "step 20: this run's 2 thread(s) got 1.0 cores" in message and "training.num_threads=1" in message


def test_training_warns_in_its_log_when_its_threads_get_no_core(tmp_path, synthetic_dir, monkeypatch):
    # As if another program held every core: the process gets no CPU time between log lines.
    monkeypatch.setattr(machine.time, "process_time", lambda: 0.0)
    raw = tiny_config_dict(synthetic_dir, training={"max_steps": 40, "log_every": 20})
    train(config_from_dict(raw), tmp_path / "run", quiet=True)
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("got 0.0 cores between the last two log lines") == 1
    assert "1 CPU thread(s) (training.num_threads)" in log
