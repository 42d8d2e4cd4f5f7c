"""One reference trajectory for the neuron equations: hand values, the Numba cells, torch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eventsim.neurons import egru_cells, lstm_cells


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_egru_cell_by_hand():
    # One neuron: a = (0.5, -1.0, 0.3), r = (0.1, 0.2, -0.4), c_prev = 0.25.
    # z = sig(0.6) = 0.645656..., r = sig(-0.8) = 0.310025..., g = tanh(0.3 + 0.310025 * -0.4)
    # = tanh(0.175990) = 0.174195..., c = z * 0.25 + (1 - z) * g = 0.161414 + 0.061725 = 0.223139...
    a = [np.array([v]) for v in (0.5, -1.0, 0.3)]
    r = [np.array([v]) for v in (0.1, 0.2, -0.4)]
    c = np.array([0.25])
    egru_cells(*a, *r, c, np.empty(1), np.empty(1), np.empty(1))
    z, rr = _sig(0.6), _sig(-0.8)
    g = math.tanh(0.3 + rr * -0.4)
    assert c[0] == pytest.approx(z * 0.25 + (1 - z) * g, rel=1e-15)
    assert c[0] == pytest.approx(0.2231390, abs=1e-7)


def test_lstm_cell_by_hand():
    # c = sig(f) * c_prev + sig(i) * tanh(g); h = sig(o) * tanh(c)
    s = [np.array([v]) for v in (0.2, 1.5, -0.7, 0.9)]
    c = np.array([-0.3])
    h = np.empty(1)
    lstm_cells(*s, c, h)
    c_ref = _sig(1.5) * -0.3 + _sig(0.2) * math.tanh(-0.7)
    assert c[0] == pytest.approx(c_ref, rel=1e-15)
    assert h[0] == pytest.approx(_sig(0.9) * math.tanh(c_ref), rel=1e-15)


def test_egru_cells_match_torch_step():
    torch = pytest.importorskip("torch")
    from training.egru import egru_step

    rng = np.random.default_rng(0)
    H = 37
    x_proj = rng.normal(0, 1.5, 3 * H)
    y_prev = np.where(rng.random(H) < 0.3, rng.normal(0, 1, H), 0.0)
    R = rng.normal(0, 0.3, (H, 3 * H))
    rb = rng.normal(0, 0.1, 3 * H)
    thr = rng.uniform(0.05, 0.5, H)
    c_prev = rng.normal(0, 0.5, H)
    T = lambda a: torch.from_numpy(np.atleast_2d(a) if a.ndim == 1 and a.size != H else a)  # noqa: E731
    y_t, c_t = egru_step(T(x_proj[None]), T(y_prev[None]), T(c_prev[None]), T(R), T(rb), T(thr))
    r_proj = y_prev @ R + rb
    c = c_prev.copy()
    egru_cells(x_proj[:H], x_proj[H:2 * H], x_proj[2 * H:], r_proj[:H], r_proj[H:2 * H], r_proj[2 * H:],
               c, np.empty(H), np.empty(H), np.empty(H))
    fire = c >= thr
    np.testing.assert_allclose(np.where(fire, c, 0.0), y_t.numpy()[0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(c - fire * thr, c_t.numpy()[0], rtol=1e-14, atol=1e-15)
    assert 0 < fire.sum() < H
