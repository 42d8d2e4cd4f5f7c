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


class LSTM(nn.Module):
    """A time-major LSTM layer: ``forward(x [T, B, I], state) -> (h [T, B, H], (h_T, c_T))``."""

    kind = "lstm"

    def __init__(self, input_size: int, hidden_size: int, dropconnect: float = 0.0) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"LSTM sizes must be positive, got input {input_size}, hidden {hidden_size}")
        if not 0.0 <= dropconnect < 1.0:
            raise ValueError(f"dropconnect must be in [0, 1), got {dropconnect}")
        self.input_size, self.hidden_size, self.dropconnect = input_size, hidden_size, dropconnect
        h4 = 4 * hidden_size
        self.kernel = nn.Parameter(torch.empty(input_size, h4))
        self.recurrent_kernel = nn.Parameter(torch.empty(hidden_size, h4))
        self.bias = nn.Parameter(torch.empty(h4))
        self.recurrent_bias = nn.Parameter(torch.empty(h4))
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

    def init_state(self, batch: int, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        dtype = dtype or self.kernel.dtype
        device = device or self.kernel.device
        zeros = torch.zeros(batch, self.hidden_size, dtype=dtype, device=device)
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        steps, batch, _ = x.shape
        h, c = state if state is not None else self.init_state(batch, x.dtype, x.device)
        recurrent = self.recurrent_kernel
        if self.training and self.dropconnect > 0:
            recurrent = nn.functional.dropout(recurrent, p=self.dropconnect, training=True)
        x_proj = torch.addmm(self.bias, x.reshape(steps * batch, -1), self.kernel).view(steps, batch, -1)
        outputs = []
        for t in range(steps):
            h, c = lstm_step(x_proj[t], h, c, recurrent, self.recurrent_bias)
            outputs.append(h)
        return torch.stack(outputs), (h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, dropconnect={self.dropconnect}"
