"""The host-wait counter (seq2seq/profiling.py) sees every kind of wait a GPU run would have, on
a CPU: reads of a value, operators that learn a size from the data, and blocking copies."""
import torch

from seq2seq.profiling import count_ops


def counted(run) -> tuple[int, list[str]]:
    with count_ops() as counts:
        run()
    return counts.syncs, sorted(counts.sites)


def test_blocking_copies_between_host_and_device_are_waits():
    x = torch.arange(6)
    assert counted(lambda: x.to(torch.device("cpu")))[0] == 1  # host -> device on a GPU run
    assert counted(lambda: x.to("cpu", torch.float32))[0] == 1
    assert counted(lambda: x.to(x))[0] == 1                    # to another tensor's device and type
    assert counted(lambda: x.cpu())[0] == 1                    # device -> host
    assert counted(lambda: torch.tensor([1, 2], device="cpu"))[0] == 1
    assert counted(lambda: x.tolist())[0] == 1


def test_what_does_not_wait_is_not_counted():
    x = torch.arange(6)
    assert counted(lambda: x.to(torch.float32))[0] == 0        # a dtype only: no copy between devices
    assert counted(lambda: x.to("cpu", non_blocking=True))[0] == 0
    assert counted(lambda: torch.tensor([1, 2]))[0] == 0       # made on the host, stays there
    assert counted(lambda: torch.sort(x).indices[:3] + 1)[0] == 0


def test_operators_that_wait_implicitly_are_counted_once_each():
    x = torch.arange(6)
    assert counted(lambda: x[x > 2])[0] == 1                   # a boolean index asks how many
    assert counted(lambda: (x > 2).nonzero())[0] == 1
    assert counted(lambda: torch.argwhere(x))[0] == 1          # not twice for the nonzero inside it
    assert counted(lambda: torch.equal(x, x))[0] == 1
    assert counted(lambda: bool((x > 2).any()))[0] == 1
    assert counted(lambda: float(x.sum()))[0] == 1
