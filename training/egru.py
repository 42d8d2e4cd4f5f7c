"""Event-based GRU (EGRU) layer in torch, EvNN parameter layout.

Parameters: ``kernel [input, 3H]``, ``recurrent_kernel [H, 3H]``, ``bias [3H]``,
``recurrent_bias [3H]``, ``thr [H]``; gate blocks contiguous in the order z, r, g.
One step (the same equations as :class:`eventsim.manifest.EGRUSpec`)::

    z = sigmoid(x W_z + b_z + y_prev R_z + rb_z)
    r = sigmoid(x W_r + b_r + y_prev R_r + rb_r)
    g = tanh(x W_g + b_g + r * (y_prev R_g + rb_g))
    c = z * c_prev + (1 - z) * g
    e = 1 where c >= thr else 0          # the event
    y = e * c                           # graded event; the only thing that travels
    c = c - e * thr                     # soft reset

The step function ``e`` gets the surrogate gradient
``dampening * max(0, 1 - support * |c - thr|)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.recurrent import GatedRecurrentLayer

GATES = ("z", "r", "g")
THR_MIN = 1e-3


class EventStep(torch.autograd.Function):
    """Heaviside ``v >= 0`` with a triangular surrogate gradient."""

    @staticmethod
    def forward(ctx, v: Tensor, dampening: float, support: float) -> Tensor:
        ctx.save_for_backward(v)
        ctx.dampening, ctx.support = dampening, support
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (v,) = ctx.saved_tensors
        surrogate = ctx.dampening * torch.clamp(1.0 - ctx.support * v.abs(), min=0.0)
        return grad * surrogate, None, None


def egru_step(
    x_proj: Tensor,
    y_prev: Tensor,
    c_prev: Tensor,
    recurrent_kernel: Tensor,
    recurrent_bias: Tensor,
    thr: Tensor,
    dampening: float = 0.7,
    support: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """One EGRU step. ``x_proj = x @ kernel + bias`` (``[B, 3H]``); returns ``(y, c)`` after the reset."""
    h = thr.shape[0]
    r_proj = y_prev @ recurrent_kernel + recurrent_bias
    z = torch.sigmoid(x_proj[:, :h] + r_proj[:, :h])
    r = torch.sigmoid(x_proj[:, h : 2 * h] + r_proj[:, h : 2 * h])
    g = torch.tanh(x_proj[:, 2 * h :] + r * r_proj[:, 2 * h :])
    c = z * c_prev + (1.0 - z) * g
    event = EventStep.apply(c - thr, dampening, support)
    y = event * c
    return y, c - event * thr


class EGRU(GatedRecurrentLayer):
    """A time-major EGRU layer: ``forward(x [T, B, I], state) -> (y [T, B, H], (y_T, c_T))``.

    ``dropconnect`` zeroes entries of ``recurrent_kernel`` (one mask per forward
    call) while training. Thresholds start Beta-distributed with mean ``thr_mean``;
    the candidate (g) bias starts at ``candidate_bias``.
    """

    kind = "egru"
    n_gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        dropconnect: float = 0.0,
        dampening: float = 0.7,
        support: float = 1.0,
        thr_mean: float = 0.3,
        thr_concentration: float = 10.0,
        candidate_bias: float = 0.3,
    ) -> None:
        super().__init__(input_size, hidden_size, dropconnect)
        self.dampening, self.support = dampening, support
        self.thr_mean, self.thr_concentration = thr_mean, thr_concentration
        self.candidate_bias = candidate_bias
        self.thr = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        h = self.hidden_size
        with torch.no_grad():
            for k in range(3):
                nn.init.xavier_uniform_(self.kernel[:, k * h : (k + 1) * h])
                nn.init.orthogonal_(self.recurrent_kernel[:, k * h : (k + 1) * h])
            self.bias.zero_()
            self.recurrent_bias.zero_()
            # With zero bias and small inputs c stays far below threshold, no event
            # fires, and neither this layer nor the ones above ever learn; a positive
            # candidate bias makes cells cross threshold from the first steps.
            self.bias[2 * h :] = self.candidate_bias
            # Beta(a, b) with mean a / (a + b) = thr_mean: positive, mostly between 0.1 and 0.5.
            a = self.thr_mean * self.thr_concentration
            b = (1.0 - self.thr_mean) * self.thr_concentration
            beta = torch.distributions.Beta(torch.tensor(a), torch.tensor(b))
            self.thr.copy_(beta.sample((h,)).clamp_(min=THR_MIN))

    @torch.no_grad()
    def clamp_thresholds(self, minimum: float = THR_MIN) -> None:
        """Keep thresholds positive (call after each optimizer step)."""
        self.thr.clamp_(min=minimum)

    def step(self, x_proj: Tensor, out: Tensor, c: Tensor, recurrent_kernel: Tensor) -> tuple[Tensor, Tensor]:
        return egru_step(x_proj, out, c, recurrent_kernel, self.recurrent_bias, self.thr, self.dampening, self.support)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dampening={self.dampening}, support={self.support}"
