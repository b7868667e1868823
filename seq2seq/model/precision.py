"""Mixed precision: which float type the matrix products run in, and the autocast context that
does it. Weights, optimizer state and checkpoints always stay float32; only the products (and
what autocast runs with them) are bf16 or fp16. The loss and log-softmax are float32 wherever
the precision (update.py and the decoder compute them with a float32 result type)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

log = logging.getLogger("seq2seq")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision to use ('fp32', 'bf16' or 'fp16') for `requested` (one of those or 'auto')
    on `device`, and why."""
    if requested != "auto":
        return requested, "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16"
        return "fp16", f"auto: {torch.cuda.get_device_name(device)} has no bf16; fp16 with loss scaling"
    if device.type == "cpu" and "amx_bf16" in cpu_flags():
        return "bf16", "auto: the CPU has AMX bf16 units, where bf16 measured faster than float32"
    return "fp32", "auto: no bf16 units measured faster on this CPU" if device.type == "cpu" else \
        f"auto: {device.type}"


def autocast(precision: str, device: torch.device):
    """The context that runs a forward pass (or a search) in `precision`."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device):
    """fp16 needs its loss scaled so that small gradients do not vanish; bf16 and float32 do not."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def rnn_dtype(device: torch.device) -> torch.dtype | None:
    """The type torch's fused RNN modules must run in on `device` under the autocast now in force,
    outside autocast; None: autocast's own choice is right. On CUDA autocast runs cuDNN RNNs in
    fp16 whatever type it was asked for, and bf16 trains without a loss scaler, so fp16's small
    gradients would underflow unseen: under bf16 the RNN runs in float32 instead."""
    on = device.type == "cuda" and torch.is_autocast_enabled("cuda")
    return torch.float32 if on and torch.get_autocast_dtype("cuda") != torch.float16 else None
