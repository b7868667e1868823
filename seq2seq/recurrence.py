"""Weight gradients of a recurrence in one matrix multiply instead of one per step.

A decoder applies the same weight matrix at every target position. Autograd then computes
that weight's gradient once per step and adds it into a running sum: for a 512-unit LSTM
the adds move as much memory as the multiplies do arithmetic. `StepLinear` instead lets
each step compute only the gradient for its input, keeps the step's (input, output
gradient) pair, and forms the weight gradient for all steps at once, G^T X, when the
backward pass reaches the weight. Results equal plain autograd up to float rounding.

Under autocast (bf16 or fp16) the forward product runs in the low precision; the backward
products run in the gradients' type, and the weight gradient comes back in the weight's own
type (float32), as autograd would give it.
"""
from __future__ import annotations

import torch


class _CollectWeightGrad(torch.autograd.Function):
    """Identity on the weight; its backward turns the stored pairs into one weight gradient.
    Autograd runs it after every step that used the weight, since they all depend on it."""

    @staticmethod
    def forward(ctx, weight, store):
        ctx.store = store
        ctx.weight_dtype = weight.dtype
        ctx.set_materialize_grads(False)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.store:  # the weight was not used by any step
            return grad, None
        grads = torch.cat([g for _, g in ctx.store])      # (steps * batch, out)
        inputs = torch.cat([x for x, _ in ctx.store]).to(grads.dtype)  # (steps * batch, in)
        ctx.store.clear()
        weight_grad = (grads.t() @ inputs).to(ctx.weight_dtype)  # (out, in)
        return (weight_grad if grad is None else weight_grad + grad), None


class _InputGradOnly(torch.autograd.Function):
    """x @ weight.T whose backward returns only the input's gradient and stores the pair."""

    @staticmethod
    def forward(ctx, x, weight, store):
        ctx.save_for_backward(x, weight)
        ctx.store = store
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        ctx.store.append((x, grad_out))
        return (grad_out @ weight.to(grad_out.dtype)).to(x.dtype), None, None


class StepLinear:
    """y = x @ weight.T + bias, to be called at every step of one forward pass."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        device = weight.device.type
        if torch.is_autocast_enabled(device):
            # Cast once per forward pass: autocast would cast these (non-leaf) weights again at
            # every step, and a bias left in float32 would turn every step's output back to float32.
            dtype = torch.get_autocast_dtype(device)
            weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
        self.bias = bias
        self.deferred = torch.is_grad_enabled() and weight.requires_grad
        self.store: list = []
        self.weight = _CollectWeightGrad.apply(weight, self.store) if self.deferred else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.deferred:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        y = _InputGradOnly.apply(x, self.weight, self.store)
        return y if self.bias is None else y + self.bias
