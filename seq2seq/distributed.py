"""Thin helpers over torch.distributed, so the training loop reads the same with one
process or many (launched by torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK)."""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def init() -> None:
    """Join the process group torchrun describes; a plain run stays single-process."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend)


def close() -> None:
    """Leave the process group (its threads are stopped before the process exits)."""
    if active():
        tdist.destroy_process_group()


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if active() else 0


def world_size() -> int:
    return tdist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        tdist.barrier()


def device_for_rank(device: torch.device) -> torch.device:
    """On GPU each local process takes its own card."""
    if device.type == "cuda" and active():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any, so all ranks take the same branch."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if tdist.get_backend() == "nccl" else "cpu")
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_float(value: float) -> float:
    """Rank 0's value on every rank (for decisions only rank 0 can compute, like validation)."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device="cuda" if tdist.get_backend() == "nccl" else "cpu")
    tdist.broadcast(t, src=0)
    return float(t.item())


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel when running under torchrun, the model itself otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids)
