"""What the EGRU and LSTM layers share: parameter layout, state, and the time loop.

Both hold ``kernel [input, gates*H]``, ``recurrent_kernel [H, gates*H]``, ``bias``
and ``recurrent_bias [gates*H]`` (the EvNN/haste layout the checkpoint keeps),
DropConnect on the recurrent kernel while training, and a state ``(out, c)`` of
two ``[B, H]`` tensors. A subclass says how many gates it has and what one step does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedRecurrentLayer(nn.Module):
    """Time-major: ``forward(x [T, B, I], state) -> (out [T, B, H], (out_T, c_T))``."""

    kind = ""
    n_gates = 0

    def __init__(self, input_size: int, hidden_size: int, dropconnect: float = 0.0) -> None:
        super().__init__()
        name = self.kind.upper()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"{name} sizes must be positive, got input {input_size}, hidden {hidden_size}")
        if not 0.0 <= dropconnect < 1.0:
            raise ValueError(f"dropconnect must be in [0, 1), got {dropconnect}")
        self.input_size, self.hidden_size, self.dropconnect = input_size, hidden_size, dropconnect
        width = self.n_gates * hidden_size
        self.kernel = nn.Parameter(torch.empty(input_size, width))
        self.recurrent_kernel = nn.Parameter(torch.empty(hidden_size, width))
        self.bias = nn.Parameter(torch.empty(width))
        self.recurrent_bias = nn.Parameter(torch.empty(width))

    def init_state(self, batch: int, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        dtype = dtype or self.kernel.dtype
        device = device or self.kernel.device
        zeros = torch.zeros(batch, self.hidden_size, dtype=dtype, device=device)
        return zeros, zeros.clone()

    def step(self, x_proj: Tensor, out: Tensor, c: Tensor, recurrent_kernel: Tensor) -> tuple[Tensor, Tensor]:
        """One time step from ``x_proj = x @ kernel + bias``; returns the new ``(out, c)``."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        steps, batch, _ = x.shape
        out, c = state if state is not None else self.init_state(batch, x.dtype, x.device)
        recurrent = self.recurrent_kernel
        if self.training and self.dropconnect > 0:
            recurrent = nn.functional.dropout(recurrent, p=self.dropconnect, training=True)
        x_proj = torch.addmm(self.bias, x.reshape(steps * batch, -1), self.kernel).view(steps, batch, -1)
        outputs = []
        for t in range(steps):
            out, c = self.step(x_proj[t], out, c, recurrent)
            outputs.append(out)
        return torch.stack(outputs), (out, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, dropconnect={self.dropconnect}"
