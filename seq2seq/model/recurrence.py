"""The decoder recurrence's building blocks, written so that a training step costs few operators.

`StepLinear`: weight gradients in one matrix multiply instead of one per step. A decoder applies
the same weight matrix at every target position. Autograd then computes that weight's gradient
once per step and adds it into a running sum: for a 512-unit LSTM the adds move as much memory
as the multiplies do arithmetic. `StepLinear` instead lets each step compute only the gradient
for its input, keeps the step's (input, output gradient) pair, and forms the weight gradient
for all steps at once, G^T X (and the bias gradient, the column sums of G), when the backward
pass reaches the weight. Results equal plain autograd up to float rounding.

`lstm_cell` and `gru_cell`: a cell's elementwise maths from its gate pre-activations. On CUDA
they are torch's fused cell kernels (one kernel forward, one backward, where the plain maths
takes about 9 and 20); elsewhere, when training, one autograd node with a hand-written backward
pass instead of about ten nodes; without gradients, plain tensor operations (what an ONNX
export traces).

`normalize`: layer normalization of a cell's gate pre-activations (Ba et al. 2016), applied to
the input and the recurrent products separately when a model asks for layer_norm. It runs
through plain autograd; the cells after it keep their own backward passes.

Under autocast (bf16 or fp16) the forward products run in the low precision, with the weights
cast once per forward pass; the backward products run in the gradients' type, and the weight
gradient comes back in the weight's own type (float32), as autograd would give it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)  # no operator at all when it is already that type


class _CollectGrads(torch.autograd.Function):
    """Identity on the weight (and bias); its backward turns the stored pairs into one weight
    gradient (and one bias gradient). Autograd runs it after every step that used the weight,
    since they all depend on it."""

    @staticmethod
    def forward(ctx, store, weight, *bias):
        ctx.store = store
        ctx.dtypes = [weight.dtype] + [b.dtype for b in bias]
        ctx.set_materialize_grads(False)
        return (weight.view_as(weight), *(b.view_as(b) for b in bias))

    @staticmethod
    def backward(ctx, weight_grad, *bias_grad):
        if not ctx.store:  # the weight was not used by any step
            return (None, weight_grad, *bias_grad)
        grads = torch.cat([g for _, g in ctx.store])  # (steps * batch, out)
        inputs = _cast(torch.cat([x for x, _ in ctx.store]), grads.dtype)  # (steps * batch, in)
        ctx.store.clear()
        total = _cast(grads.t().mm(inputs), ctx.dtypes[0])  # (out, in)
        result = [total if weight_grad is None else total + weight_grad]
        if len(ctx.dtypes) > 1:
            total = _cast(grads.sum(0), ctx.dtypes[1])  # (out,)
            result.append(total if bias_grad[0] is None else total + bias_grad[0])
        return (None, *result)


class _InputGradOnly(torch.autograd.Function):
    """x @ weight.T (+ bias) whose backward returns only the input's gradient and stores the pair."""

    @staticmethod
    def forward(ctx, x, weight, weight_t, bias, store):
        ctx.save_for_backward(x, weight)
        ctx.store = store
        return x.mm(weight_t) if bias is None else torch.addmm(bias, x, weight_t)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        ctx.store.append((x, grad_out))
        return _cast(grad_out.mm(_cast(weight, grad_out.dtype)), x.dtype), None, None, None, None


class StepLinear:
    """y = x @ weight.T + bias, to be called at every step of one forward pass."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        device = weight.device.type
        if torch.is_autocast_enabled(device):
            # Cast once per forward pass: autocast would cast these (non-leaf) weights again at
            # every step, and a bias left in float32 would turn every step's output back to float32.
            dtype = torch.get_autocast_dtype(device)
            weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
        self.deferred = torch.is_grad_enabled() and weight.requires_grad
        self.store: list = []
        if self.deferred:
            weight, *rest = _CollectGrads.apply(self.store, weight, *([] if bias is None else [bias]))
            bias = rest[0] if rest else None
        self.weight, self.bias = weight, bias
        self.weight_t = weight.t()  # transposed once per pass, not at every step

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.deferred:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        return _InputGradOnly.apply(x, self.weight, self.weight_t, self.bias, self.store)


# -- cells ------------------------------------------------------------------------------------

def _common(*tensors: torch.Tensor) -> torch.dtype:
    """The type the tensors meet in (as promotion would make it), asked of torch only when they differ."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        if t.dtype != dtype:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def lstm_pointwise(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LSTM gates (batch, 4 * hidden) in torch's order (input, forget, cell, output), cell state c
    (batch, hidden) -> new h, c: the plain maths."""
    h_size = c.size(1)
    act = gates.sigmoid()  # the cell gate's share is not used
    c = act[:, h_size:2 * h_size] * c + act[:, :h_size] * gates[:, 2 * h_size:3 * h_size].tanh()
    return act[:, 3 * h_size:] * c.tanh(), c


def _lstm_forward(gates: torch.Tensor, c_prev: torch.Tensor):
    """lstm_pointwise, keeping what its backward pass needs: h, c, saved."""
    h_size = c_prev.size(1)
    act = gates.sigmoid()
    i, f, o = act[:, :h_size], act[:, h_size:2 * h_size], act[:, 3 * h_size:]
    g = gates[:, 2 * h_size:3 * h_size].tanh()
    c = f * c_prev + i * g
    tc = c.tanh()
    return o * tc, c, (i, f, o, g, tc, c_prev)  # the gates kept apart: no slicing again


def _lstm_backward(saved, dh: Optional[torch.Tensor], dc: Optional[torch.Tensor]):
    """The gates' gradient (batch, 4 * hidden) and c_prev's, from h's and c's (either may be None)."""
    i, f, o, g, tc, c_prev = saved
    dh = torch.zeros_like(tc) if dh is None else dh  # (the last step's c is not used: dc is None)
    through_h = tanh_backward(dh * o, tc)
    dc = through_h if dc is None else dc + through_h  # the new c's gradient, through h as well
    grad = torch.cat([sigmoid_backward(dc * g, i), sigmoid_backward(dc * c_prev, f), tanh_backward(dc * i, g),
                      sigmoid_backward(dh * tc, o)], dim=1)
    return grad, dc * f


class _LSTMCell(torch.autograd.Function):
    """lstm_pointwise(input_gates + hidden_gates, c) as one autograd node (hidden_gates may be None)."""

    @staticmethod
    def forward(ctx, input_gates, hidden_gates, c_prev):
        h, c, saved = _lstm_forward(input_gates if hidden_gates is None else input_gates + hidden_gates, c_prev)
        ctx.save_for_backward(*saved)
        ctx.with_hidden = hidden_gates is not None
        ctx.set_materialize_grads(False)
        return h, c

    @staticmethod
    def backward(ctx, dh, dc):
        grad, dc_prev = _lstm_backward(ctx.saved_tensors, dh, dc)
        return grad, grad if ctx.with_hidden else None, dc_prev


class _LSTMStep(torch.autograd.Function):
    """An LSTM step whose input share of the gates is precomputed, with its recurrent product, as
    one autograd node: gates = share + h @ weight.T, then the cell. Like StepLinear's steps it
    leaves the weight's gradient to the collector, storing the pair (h, the gates' gradient)."""

    @staticmethod
    def forward(ctx, share, h_prev, c_prev, weight, weight_t, store):
        h, c, saved = _lstm_forward(torch.addmm(share, h_prev, weight_t), c_prev)
        ctx.save_for_backward(*saved, h_prev, weight)
        ctx.store = store
        ctx.set_materialize_grads(False)
        return h, c

    @staticmethod
    def backward(ctx, dh, dc):
        *saved, h_prev, weight = ctx.saved_tensors
        grad, dc_prev = _lstm_backward(saved, dh, dc)
        ctx.store.append((h_prev, grad))
        return grad, _cast(grad.mm(_cast(weight, grad.dtype)), h_prev.dtype), dc_prev, None, None, None


def lstm_step(recurrent: StepLinear, share: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
              norm: Optional[Callable] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of an LSTM recurrence whose input share of the gates (batch, 4 * hidden) was
    computed for all steps at once; `recurrent` is the product with W_hh, `norm` (layer norm)
    what follows it: new h, c."""
    if norm is not None:
        return lstm_cell(share, norm(recurrent(h)), c)
    if recurrent.deferred and not share.is_cuda:
        return _LSTMStep.apply(share, h, c, recurrent.weight, recurrent.weight_t, recurrent.store)
    return lstm_cell(recurrent(h), share, c)


def lstm_cell(input_gates: torch.Tensor, hidden_gates: Optional[torch.Tensor], c: torch.Tensor, *,
              train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from its gate pre-activations, the sum of input_gates and hidden_gates
    (batch, 4 * hidden; hidden_gates may be None), and the cell state c (batch, hidden): new h, c.
    Without `train` (decoding), never this module's own autograd node: an export traces the
    plain maths whatever the grad mode."""
    both = (input_gates, c) if hidden_gates is None else (input_gates, hidden_gates, c)
    dtype = _common(*both)
    input_gates, c = _cast(input_gates, dtype), _cast(c, dtype)
    hidden_gates = None if hidden_gates is None else _cast(hidden_gates, dtype)
    if input_gates.is_cuda:
        # The fused kernel wants both operands (a layer above the first has only one).
        hidden_gates = torch.zeros_like(input_gates) if hidden_gates is None else hidden_gates
        h, c, _ = torch.ops.aten._thnn_fused_lstm_cell(input_gates, hidden_gates, c)
        return h, c
    if train and _needs_grad(*both):
        return _LSTMCell.apply(input_gates, hidden_gates, c)
    return lstm_pointwise(input_gates if hidden_gates is None else input_gates + hidden_gates, c)


def gru_pointwise(input_gates: torch.Tensor, hidden_gates: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """GRU input and hidden products (batch, 3 * hidden) in torch's order (reset, update, new),
    state h (batch, hidden) -> new h: the plain maths."""
    h_size = h.size(1)
    rz = (input_gates[:, :2 * h_size] + hidden_gates[:, :2 * h_size]).sigmoid()
    n = torch.tanh(input_gates[:, 2 * h_size:] + rz[:, :h_size] * hidden_gates[:, 2 * h_size:])
    return torch.lerp(n, h, rz[:, h_size:])


def _gru_forward(input_gates: torch.Tensor, hidden_gates: torch.Tensor, h_prev: torch.Tensor):
    """gru_pointwise, keeping what its backward pass needs: h, saved."""
    h_size = h_prev.size(1)
    rz = (input_gates[:, :2 * h_size] + hidden_gates[:, :2 * h_size]).sigmoid()
    r, z = rz[:, :h_size], rz[:, h_size:]
    hn = hidden_gates[:, 2 * h_size:]
    n = torch.tanh(input_gates[:, 2 * h_size:] + r * hn)
    return torch.lerp(n, h_prev, z), (rz, r, z, n, hn, h_prev)  # the gates kept apart: no slicing again


def _gru_backward(saved, dh: torch.Tensor):
    """The input and hidden products' gradients (batch, 3 * hidden) and h_prev's direct one."""
    rz, r, z, n, hn, h_prev = saved
    dn = tanh_backward(dh - dh * z, n)  # the new gate's pre-activation
    drz = sigmoid_backward(torch.cat([dn * hn, dh * (h_prev - n)], dim=1), rz)  # (batch, 2 * hidden)
    return torch.cat([drz, dn], dim=1), torch.cat([drz, dn * r], dim=1), dh * z


class _GRUCell(torch.autograd.Function):
    """gru_pointwise as one autograd node."""

    @staticmethod
    def forward(ctx, input_gates, hidden_gates, h_prev):
        h, saved = _gru_forward(input_gates, hidden_gates, h_prev)
        ctx.save_for_backward(*saved)
        return h

    @staticmethod
    def backward(ctx, dh):
        return _gru_backward(ctx.saved_tensors, dh)


class _GRUStep(torch.autograd.Function):
    """_LSTMStep for a GRU: the hidden product h @ weight.T + bias and the cell as one node."""

    @staticmethod
    def forward(ctx, share, h_prev, weight, weight_t, bias, store):
        h, saved = _gru_forward(share, torch.addmm(bias, h_prev, weight_t), h_prev)
        ctx.save_for_backward(*saved, weight)
        ctx.store = store
        return h

    @staticmethod
    def backward(ctx, dh):
        *saved, weight = ctx.saved_tensors
        d_share, d_hidden, dh_prev = _gru_backward(saved, dh)
        h_prev = saved[-1]
        ctx.store.append((h_prev, d_hidden))
        dh_prev = dh_prev + d_hidden.mm(_cast(weight, d_hidden.dtype))
        return d_share, _cast(dh_prev, h_prev.dtype), None, None, None, None


def gru_step(recurrent: StepLinear, share: torch.Tensor, h: torch.Tensor,
             norm: Optional[Callable] = None) -> torch.Tensor:
    """One step of a GRU recurrence whose input products (batch, 3 * hidden) were computed for
    all steps at once; `recurrent` is the product with W_hh and b_hh (without b_hh when `norm`,
    the layer norm that follows it, brings the bias): the new h."""
    if norm is not None:
        return gru_cell(share, norm(recurrent(h)), h)
    if recurrent.deferred and not share.is_cuda and recurrent.bias is not None:
        return _GRUStep.apply(share, h, recurrent.weight, recurrent.weight_t, recurrent.bias, recurrent.store)
    return gru_cell(share, recurrent(h), h)


def gru_cell(input_gates: torch.Tensor, hidden_gates: torch.Tensor, h: torch.Tensor, *,
             train: bool = True) -> torch.Tensor:
    """One GRU step from its input and hidden products (batch, 3 * hidden), biases included, and
    the state h (batch, hidden): the new h. `train` as for lstm_cell."""
    dtype = _common(input_gates, hidden_gates, h)
    input_gates, hidden_gates, h = _cast(input_gates, dtype), _cast(hidden_gates, dtype), _cast(h, dtype)
    if input_gates.is_cuda:
        return torch.ops.aten._thnn_fused_gru_cell(input_gates, hidden_gates, h)[0]
    if train and _needs_grad(input_gates, hidden_gates, h):
        return _GRUCell.apply(input_gates, hidden_gates, h)
    return gru_pointwise(input_gates, hidden_gates, h)


# -- layer normalization of the gates -----------------------------------------------------------

NORM_EPS = 1e-5


def normalize(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Gate pre-activations x (..., gates * hidden) layer-normalized over all gates together, then
    scaled by `gain` and shifted by `bias` (gates * hidden,): Ba et al.'s normalization, one per
    product, as Marian's layer-normalized cells do it. The cell's own bias is the shift."""
    return F.layer_norm(x, (x.size(-1),), gain, bias, NORM_EPS)


class GateNorm(nn.Module):
    """`normalize` as a module over given gain and bias (decoding holds its per-step maths as modules)."""

    def __init__(self, gain: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.gain = nn.Parameter(gain.detach(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False)
        self.shape = tuple(gain.shape)  # a constant, not a size read from x, for an export's graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.gain, self.bias, NORM_EPS)


def sigmoid_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """grad * output * (1 - output): through a sigmoid, from its output, in one operator."""
    return torch.ops.aten.sigmoid_backward(grad, output)


def tanh_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """grad * (1 - output ** 2): through a tanh, from its output, in one operator."""
    return torch.ops.aten.tanh_backward(grad, output)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
