"""Neuron updates as pure functions over one PE's arrays, compiled by Numba.

Each takes the PE's summed gate currents (``a_*`` input side with bias,
``r_*`` recurrent side with recurrent bias) and its cell state, and updates the
state in place; the caller turns the result into events. The torch layers in
``training/`` implement the same equations, and the tests hold both to one
reference. Gate nonlinearities use :mod:`eventsim.vmath` so they vectorise.
"""

from __future__ import annotations

from numba import njit

from eventsim.vmath import sigmoid_into, tanh_into


@njit(cache=True)
def egru_cells(a_z, a_r, a_g, r_z, r_r, r_g, c, z, r, g):
    """EGRU cell update (EvNN convention), in place on ``c``; ``z, r, g`` are scratch.

    z = sigmoid(a_z + r_z); r = sigmoid(a_r + r_r); g = tanh(a_g + r * r_g);
    c = z * c + (1 - z) * g. Thresholding and reset are left to the caller.
    """
    n = c.shape[0]
    for i in range(n):
        z[i] = a_z[i] + r_z[i]
        r[i] = a_r[i] + r_r[i]
    sigmoid_into(z, z)
    sigmoid_into(r, r)
    for i in range(n):
        g[i] = a_g[i] + r[i] * r_g[i]
    tanh_into(g, g)
    for i in range(n):
        c[i] = z[i] * c[i] + (1.0 - z[i]) * g[i]


@njit(cache=True)
def lstm_cells(s_i, s_f, s_g, s_o, c, h):
    """LSTM update from summed gate currents (clobbered), in place on ``c``; writes ``h``.

    c = sigmoid(s_f) * c + sigmoid(s_i) * tanh(s_g); h = sigmoid(s_o) * tanh(c).
    """
    n = c.shape[0]
    sigmoid_into(s_i, s_i)
    sigmoid_into(s_f, s_f)
    tanh_into(s_g, s_g)
    sigmoid_into(s_o, s_o)
    for i in range(n):
        c[i] = s_f[i] * c[i] + s_i[i] * s_g[i]
        h[i] = c[i]
    tanh_into(h, h)
    for i in range(n):
        h[i] *= s_o[i]
