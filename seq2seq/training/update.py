"""One training update: loss, backward pass, clipping and the optimizer step, and what to do
when a batch does not fit in memory. The trainer, the benchmark and the profiling scripts all
train through `update`."""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch

from seq2seq.training import distributed as dist
from seq2seq.data import Batch
from seq2seq.errors import is_out_of_memory
from seq2seq.model.precision import autocast
from seq2seq.data.tokenizer import PAD

log = logging.getLogger("seq2seq")


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Summed label-smoothed cross-entropy over rows whose target is not PAD, with the gradient
    written directly as softmax minus the smoothed target distribution. The same values as
    F.cross_entropy(..., label_smoothing=eps, ignore_index=PAD, reduction="sum"), but its backward
    pass makes three passes over the (tokens, vocabulary) matrix instead of torch's many (zero
    fill, scatter, log-softmax backward, smoothing term): the loss was over a tenth of a
    training step on CPU (docs/measurements/2026-11-23/profile_training.txt)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        keep = target != PAD
        nll = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        per_token = -(1.0 - eps) * nll - (eps / logp.size(1)) * logp.sum(dim=1)
        ctx.save_for_backward(logp, target, keep)
        ctx.eps, ctx.dtype = eps, logits.dtype
        return torch.where(keep, per_token, torch.zeros_like(per_token)).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        logp, target, keep = ctx.saved_tensors
        eps = ctx.eps
        grad = logp.exp().sub_(eps / logp.size(1))
        grad.scatter_add_(1, target.unsqueeze(1), grad.new_full((target.size(0), 1), -(1.0 - eps)))
        grad.mul_(keep.unsqueeze(1) * grad_output)
        return grad.to(ctx.dtype), None, None


def token_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Summed (label-smoothed) cross-entropy over non-pad target tokens."""
    return _SmoothedCrossEntropy.apply(logits.reshape(-1, logits.size(-1)), target.reshape(-1), label_smoothing)


def split_batch(batch: Batch) -> tuple[Batch, Batch]:
    """Two halves of a batch, each trimmed to its own longest sentence."""
    half = batch.src.size(0) // 2
    parts = []
    for rows in (slice(0, half), slice(half, None)):
        lengths = batch.src_lengths[rows]
        tgt_out = batch.tgt_out[rows]
        tokens = (tgt_out != PAD).sum(dim=1)
        tgt_len = int(tokens.max())
        parts.append(Batch(batch.src[rows, :int(lengths.max())], lengths, batch.tgt_in[rows, :tgt_len],
                           tgt_out[:, :tgt_len], batch.indices[rows], int(tokens.sum())))
    return parts[0], parts[1]


def forward_backward(model: torch.nn.Module, batch: Batch, *, denominator: float,
                     label_smoothing: float, precision: str = "fp32", scaler=None) -> tuple[torch.Tensor, int]:
    """Accumulate the gradients of `batch`'s summed loss divided by `denominator`. When the batch
    does not fit in memory its halves are tried in turn (same gradients, as the loss is a sum); a
    single pair that still does not fit is skipped. The forward pass runs in `precision` (the
    loss itself is float32); with an fp16 `scaler` the loss is scaled before the backward pass.
    Returns (summed loss, a float32 scalar left on the device, pairs skipped)."""
    in_backward = False
    try:
        with autocast(precision, batch.src.device):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss_sum = token_loss(logits, batch.tgt_out, label_smoothing)
        in_backward = True
        loss = loss_sum / denominator
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss_sum.detach(), 0
    except RuntimeError as e:
        # Under DDP every rank must run the same backward passes, so splitting is not an option.
        if not is_out_of_memory(e) or dist.world_size() > 1:
            raise
    logits = loss_sum = None  # free what the failed attempt held before retrying
    if in_backward:
        # A torn backward pass may have added part of this batch's gradients: start the update
        # afresh (with accum_steps > 1 the earlier batches of this update are dropped with it).
        log.warning("out of memory in the backward pass; gradients of this update so far are dropped")
        model.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    nothing = torch.zeros((), device=batch.src.device)
    if batch.src.size(0) == 1:
        log.warning("out of memory on a single pair (%d source, %d target pieces); pair skipped "
                    "(lower data.max_src_len and data.max_tgt_len to drop such pairs before training)",
                    int(batch.src_lengths[0]), batch.num_tgt_tokens)
        return nothing, 1
    log.warning("out of memory on a batch of %d pairs; retrying it in halves", batch.src.size(0))
    total, skipped = nothing, 0
    for part in split_batch(batch):
        loss, n = forward_backward(model, part, denominator=denominator, label_smoothing=label_smoothing,
                                   precision=precision, scaler=scaler)
        total, skipped = total + loss, skipped + n
    return total, skipped


@dataclass
class UpdateResult:
    """What one update did. The tensors stay on the device (reading them would wait for the
    update to finish): the trainer sums them and reads them when it writes a log line."""
    loss_sum: torch.Tensor  # () float32: summed (label-smoothed) loss of the update's batches
    tokens: int             # their target tokens, EOS included
    skipped_pairs: int      # pairs that did not fit in memory even alone
    skipped: torch.Tensor   # () bool: the loss or gradients were not finite, so nothing changed
    overflow: torch.Tensor  # () bool, fp16 only: of those, the gradients overflowed the loss scale (now lowered)


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence[Batch], *,
           clip_norm: float | None, label_smoothing: float, loss_normalization: str = "tokens",
           accum_steps: int | None = None, precision: str = "fp32", scaler=None,
           hold: Sequence[torch.nn.Parameter] = ()) -> UpdateResult:
    """One optimizer update from the summed gradients of `batches` (already on the model's
    device). Each batch's loss is divided by its tokens (or sentences) times `accum_steps`
    (default: len(batches)). `model` may be wrapped in DistributedDataParallel: then only the
    last batch synchronises gradients across ranks. An update whose gradient norm is not finite
    is skipped (gradients dropped, weights and optimizer state untouched); the norm is the same
    on every rank, so all ranks skip together. Forward passes run in `precision` (precision.py);
    fp16 takes the GradScaler that `scaler` holds, whose overflows lower the scale and skip the
    update. The parameters in `hold` lose their gradients before clipping, so the optimizer
    leaves them (and its state for them) exactly as they are.

    Nothing here waits for the device (with a fused optimizer): the skip is decided on the
    device, and the loss comes back as a device tensor."""
    accum_steps = accum_steps or len(batches)
    losses, tokens, skipped_pairs = [], 0, 0
    for n, batch in enumerate(batches):
        ntok = batch.num_tgt_tokens
        denominator = ntok if loss_normalization == "tokens" else batch.src.size(0)
        last = n == len(batches) - 1
        with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            loss, pairs = forward_backward(model, batch, denominator=denominator * accum_steps,
                                           label_smoothing=label_smoothing, precision=precision, scaler=scaler)
        losses.append(loss)
        tokens, skipped_pairs = tokens + ntok, skipped_pairs + pairs
    loss_sum = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
    for p in hold:
        p.grad = None
    if scaler is not None:
        scaler.unscale_(optimizer)  # clipping sees the true gradients
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm or float("inf"))
    skipped = ~torch.isfinite(norm)
    if scaler is not None:
        scaler.step(optimizer)  # skips the step itself when the gradients overflowed
        scaler.update()
        overflow = skipped & torch.isfinite(loss_sum)
    else:
        step_unless(optimizer, skipped)
        overflow = torch.zeros_like(skipped)
    optimizer.zero_grad(set_to_none=True)
    return UpdateResult(loss_sum, tokens, skipped_pairs, skipped, overflow)


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """optimizer.step() unless `skip` (a () bool on the device) is True. A fused optimizer takes
    it as its `found_inf`, the way GradScaler hands it over, and skips inside its kernel (its
    step counts stay too), so the host never waits to read it; any other optimizer reads it."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale, optimizer.found_inf = None, skip.float()
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not bool(skip):
        optimizer.step()
