"""Dynamic int8 quantization for CPU decoding.

Weights of the linear and recurrent layers are stored as int8 and activations are quantized on
the fly (fbgemm on x86), which makes the matrix products cheaper on CPUs without fast float32.
What is covered: every nn.Linear (attention projections, the combine layer, the bridge and the
output projection, which dominates decoding), the encoder's nn.LSTM/nn.GRU, and the decoder
cell's per-step products, which the decoding object (decoding.py) holds as nn.Linear modules:
quantize that object, not the training model. The embedding share of the decoder's first layer
stays float32: it reads the cell's weight directly.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from seq2seq.errors import DeviceError

QUANTIZED_TYPES = (nn.Linear, nn.LSTM, nn.GRU)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` (on CPU, for inference) with int8 dynamic quantization applied."""
    if any(p.is_cuda for p in model.parameters()):
        raise DeviceError("int8 quantization runs on CPU only; use --device cpu")
    # Modules sharing a weight with an embedding (tied output layer) are quantized from a copy
    # of that weight; the embedding itself stays float.
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager API still works here and
        # the warning would only repeat on every load.
        warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_tensor).*")
        return torch.ao.quantization.quantize_dynamic(model.eval(), set(QUANTIZED_TYPES), dtype=torch.qint8,
                                                      inplace=False)


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules that run int8 dynamic kernels."""
    qtypes = (torch.ao.nn.quantized.dynamic.Linear, torch.ao.nn.quantized.dynamic.LSTM,
              torch.ao.nn.quantized.dynamic.GRU)
    return [name for name, m in model.named_modules() if isinstance(m, qtypes)]
