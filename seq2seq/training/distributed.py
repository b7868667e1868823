"""Thin helpers over torch.distributed, so the training loop reads the same with one
process or many (launched by torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK).

Gradients are averaged over NCCL on GPUs (gloo on CPUs). The decisions all ranks must agree on
(stop, save, the validation score) and the waits (barriers, the other ranks while rank 0
validates) go over a gloo group on CPU tensors instead: they never make the host wait for a GPU,
and a long validation cannot run into NCCL's timeout, as no NCCL collective is pending meanwhile."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as tdist

# How long a rank waits for the others in a control collective: rank 0 validates (and writes
# checkpoints) while the others wait, and a large validation set decoded with a wide beam takes long.
CONTROL_TIMEOUT = timedelta(hours=24)

_control = None  # the gloo group of control collectives; None: the default group is gloo already


def init() -> None:
    """Join the process group torchrun describes; a plain run stays single-process."""
    global _control
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or tdist.is_initialized():
        return
    if torch.cuda.is_available():
        # Each rank takes its own card before any collective: NCCL binds a communicator to the
        # current device, and a barrier before set_device would put every rank on card 0.
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        tdist.init_process_group("nccl", device_id=device)
        _control = tdist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    else:
        tdist.init_process_group("gloo", timeout=CONTROL_TIMEOUT)


def close() -> None:
    """Leave the process group (its threads are stopped before the process exits)."""
    global _control
    if active():
        tdist.destroy_process_group()
    _control = None


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if active() else 0


def world_size() -> int:
    return tdist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (over the control group: no GPU involved)."""
    if active():
        tdist.barrier(group=_control)


def device_for_rank(device: torch.device) -> torch.device:
    """On GPU each local process takes its own card (init has made it the current device)."""
    if device.type == "cuda" and active():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any, so all ranks take the same branch."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])  # a CPU tensor over the control group
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=_control)
    return bool(t.item() > 0)


def broadcast_float(value: float) -> float:
    """Rank 0's value on every rank (for decisions only rank 0 can compute, like validation)."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)  # a CPU tensor over the control group
    tdist.broadcast(t, src=0, group=_control)
    return float(t.item())


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel when running under torchrun, the model itself otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids)
