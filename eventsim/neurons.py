"""Neuron updates as pure scalar functions, compiled by Numba.

Each takes one neuron's accumulated input currents and state and returns its
output and new state; the engine loops over neurons and the torch layers in
``training/`` implement the same equations (the tests hold both to one
reference). ``a_*`` are input-side sums (bias included), ``r_*`` recurrent-side
sums (recurrent bias included), in the gate order of the manifest.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, inline="always")
def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@njit(cache=True, inline="always")
def egru_step(a_z: float, a_r: float, a_g: float, r_z: float, r_r: float, r_g: float, c: float, thr: float):
    """EGRU (EvNN convention). Returns ``(y, c_new)``; ``y != 0`` exactly when the neuron fires."""
    z = sigmoid(a_z + r_z)
    r = sigmoid(a_r + r_r)
    g = math.tanh(a_g + r * r_g)
    c = z * c + (1.0 - z) * g
    if c >= thr:
        return c, c - thr
    return 0.0, c


@njit(cache=True, inline="always")
def lstm_step(s_i: float, s_f: float, s_g: float, s_o: float, c: float):
    """LSTM; ``s_*`` are the summed gate currents. Returns ``(h, c_new)``."""
    i = sigmoid(s_i)
    f = sigmoid(s_f)
    g = math.tanh(s_g)
    o = sigmoid(s_o)
    c = f * c + i * g
    return o * math.tanh(c), c
