"""LSTM layer in torch with the same layout as the EGRU (the dense baseline).

Parameters: ``kernel [input, 4H]``, ``recurrent_kernel [H, 4H]``, ``bias [4H]``,
``recurrent_bias [4H]``; gate blocks contiguous in the order i, f, g, o::

    i, f, o = sigmoid(x W + b + h_prev R + rb)   (their blocks)
    g = tanh(x W_g + b_g + h_prev R_g + rb_g)
    c = f * c_prev + i * g
    h = o * tanh(c)                              # sent every step

torch's ``nn.LSTMCell`` uses the same gate order with ``weight_ih = kernel.T``,
``weight_hh = recurrent_kernel.T``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.recurrent import GatedRecurrentLayer

GATES = ("i", "f", "g", "o")


def lstm_step(
    x_proj: Tensor, h_prev: Tensor, c_prev: Tensor, recurrent_kernel: Tensor, recurrent_bias: Tensor
) -> tuple[Tensor, Tensor]:
    """One LSTM step. ``x_proj = x @ kernel + bias`` (``[B, 4H]``); returns ``(h, c)``."""
    n = h_prev.shape[1]
    gates = x_proj + torch.addmm(recurrent_bias, h_prev, recurrent_kernel)
    i = torch.sigmoid(gates[:, :n])
    f = torch.sigmoid(gates[:, n : 2 * n])
    g = torch.tanh(gates[:, 2 * n : 3 * n])
    o = torch.sigmoid(gates[:, 3 * n :])
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


class LSTM(GatedRecurrentLayer):
    """A time-major LSTM layer: ``forward(x [T, B, I], state) -> (h [T, B, H], (h_T, c_T))``."""

    kind = "lstm"
    n_gates = 4

    def __init__(self, input_size: int, hidden_size: int, dropconnect: float = 0.0) -> None:
        super().__init__(input_size, hidden_size, dropconnect)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        h = self.hidden_size
        with torch.no_grad():
            for k in range(4):
                nn.init.xavier_uniform_(self.kernel[:, k * h : (k + 1) * h])
                nn.init.orthogonal_(self.recurrent_kernel[:, k * h : (k + 1) * h])
            self.bias.zero_()
            self.recurrent_bias.zero_()
            self.bias[h : 2 * h] = 1.0  # forget gate open at the start

    def step(self, x_proj: Tensor, out: Tensor, c: Tensor, recurrent_kernel: Tensor) -> tuple[Tensor, Tensor]:
        return lstm_step(x_proj, out, c, recurrent_kernel, self.recurrent_bias)
