"""What a piece of code asks of the device, counted with torch.profiler: operator calls, and
host waits: reads of a device value (after which the host waits until the device has caught
up), operators that must learn a size from the data, and blocking copies from the host to the
device (`.to(device)` of a host tensor, `torch.tensor(data, device=...)`), which on a GPU wait
for the device's queue too. The tests that hold the training update and the search loops to
their budgets and experiments/step_ops.py count with it. On a CPU run nothing waits, but the
same calls are made, so the count says what a GPU run would do: the bound a CPU test asserts is
the one torch's sync debug mode holds the same code to on a GPU (tests/test_cuda.py)."""
from __future__ import annotations

import sys
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.profiler import ProfilerActivity, profile

# Operators that read a device value on the host: item() and every int(), float() and bool()
# of a tensor end in _local_scalar_dense; the others must learn a size from the data.
SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2",
                      "aten::_unique", "aten::unique_dim", "aten::unique_consecutive", "aten::unique_dim_consecutive",
                      "aten::argwhere", "aten::nonzero_numpy", "aten::equal", "aten::bincount"})
# Reads that a CPU run shows but that are no syncs on a GPU: a PackedSequence keeps its batch
# sizes on the CPU (torch's RNN modules read them, and so does the encoder's recurrence written
# out, which only CPUs run), and the CPU kernels of fused optimizers read their step count and
# skip flag on the host, where the CUDA kernels read them on the device.
HOST_SIDE_FRAMES = ("torch/nn/modules/rnn.py", "torch/nn/utils/rnn.py", "written_out_rnn")
HOST_SIDE_OPS = frozenset({"aten::_fused_adam_", "aten::_fused_adamw_", "aten::_fused_sgd_",
                           "aten::_fused_adagrad_"})
# Copies to the host for which a CPU run records no operator at all: counted by wrapping them
# while counting. (numpy(force=True) copies once, where .cpu().numpy() would count twice.)
HOST_COPIES = ("tolist", "cpu", "numpy")
# Copies that name a device: on a CPU run every tensor is a host tensor, so each one is what a GPU
# run would do as a blocking host-to-device copy (or, to "cpu", a copy back). A non_blocking copy
# from pinned memory does not wait, and torch's own calls are its business.
DEVICE_COPIES = ("to", "cuda")


@dataclass
class OpCounts:
    ops: int = 0                                     # aten operator calls, nested ones included
    syncs: int = 0                                   # host syncs, the host-side reads above excepted
    sites: Counter = field(default_factory=Counter)  # syncs by operator and the innermost frame of ours


def _ancestors(event) -> Iterator[str]:
    parent = event.cpu_parent
    while parent is not None:
        yield parent.name
        parent = parent.cpu_parent


def _site(event, above: list[str]) -> str:
    # With with_stack, the Python frames an operator runs in are its ancestors, named "file(line): function".
    ours = [name for name in above if "seq2seq/" in name or "scripts/" in name]
    return f"{event.name} in {ours[0] if ours else '?'}"


def _names_a_device(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether a Tensor.to / .cuda call moves the tensor to a device (not only to a dtype)."""
    if kwargs.get("non_blocking") or (len(args) > 1 and args[1] is True and name == "to"):
        return False
    if name == "cuda" or "device" in kwargs:
        return True
    return bool(args) and isinstance(args[0], (torch.device, str, torch.Tensor))


def _caller(depth: int = 2) -> str:
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}({frame.f_lineno}): {frame.f_code.co_name}"


@contextmanager
def _count_host_copies(counts: OpCounts) -> Iterator[None]:
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_COPIES + DEVICE_COPIES}
    saved_tensor = torch.tensor

    def count(what: str, caller: str) -> None:
        if not any(f in caller for f in HOST_SIDE_FRAMES) and "/torch/" not in caller.split("(")[0]:
            counts.syncs += 1
            counts.sites[f"{what} in {caller}"] += 1

    def counted(name: str):
        original = getattr(torch.Tensor, name)

        def copy(self, *args, **kwargs):
            if name in HOST_COPIES or _names_a_device(name, args, kwargs):
                count(f"Tensor.{name}", _caller())
            return original(self, *args, **kwargs)
        return copy

    def tensor(data, *args, **kwargs):  # Python data onto a device is a copy from the host
        if kwargs.get("device") is not None:
            count("torch.tensor(device=...)", _caller())
        return saved_tensor(data, *args, **kwargs)

    for name in HOST_COPIES + DEVICE_COPIES:
        setattr(torch.Tensor, name, counted(name))
    torch.tensor = tensor
    try:
        yield
    finally:
        torch.tensor = saved_tensor
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


@contextmanager
def count_ops() -> Iterator[OpCounts]:
    """Counts the operator calls and host syncs of the code run inside; filled in on exit."""
    counts = OpCounts()
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof, _count_host_copies(counts):
        yield counts
    for event in prof.events():
        if not event.name.startswith("aten::"):  # Python frames, autograd nodes, optimizer steps
            continue
        counts.ops += 1
        if event.name not in SYNC_OPS:
            continue
        above = list(_ancestors(event))
        if any(name in HOST_SIDE_OPS for name in above) or any(f in name for name in above for f in HOST_SIDE_FRAMES):
            continue
        if any(name in SYNC_OPS for name in above):  # one wait, counted at the outermost operator
            continue
        counts.syncs += 1
        counts.sites[_site(event, above)] += 1


def cuda_waits(run) -> int:
    """How many times run() makes the host wait for a CUDA device, as torch's sync debug mode
    names them. On a GPU this is the judge, not the profiler: the profiler synchronises once
    itself as its window closes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchronizing CUDA operation" in str(w.message) for w in caught)
