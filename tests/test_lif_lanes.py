"""The vector LIF step (eventsim.lif_lanes) equals the contract's scalar step, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eventsim.lif_lanes import lif_lanes, lif_lanes_row

REPO = Path(__file__).resolve().parents[1]


def scalar_step(u, x, a, gamma, gain, v_th, decay, reset_zero):
    """The contract, one neuron at a time in Python floats: returns (u, a, spike list)."""
    u, a, spikes = u.copy(), a.copy(), []
    for c in range(u.size):
        uu = float(gamma) * float(u[c]) + (float(gain) * float(x[c]) if decay else float(x[c]))
        fire = uu >= v_th
        if fire:
            spikes.append(c)
            u[c] = 0.0 if reset_zero else uu - v_th
        else:
            u[c] = uu
        a[c] = gamma * a[c] + (1.0 if fire else 0.0)
    return u, a, spikes


def case(size: int, seed: int, v_th: float):
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, v_th, size)
    x = rng.normal(0.2 * v_th, v_th, size)
    if size > 4:  # exact threshold crossings, a NaN current, infinities
        x[1] = v_th - u[1]
        x[2] = np.nan
        x[3] = np.inf
        x[4] = -np.inf
    return u, x, rng.uniform(0.0, 5.0, size)


@pytest.mark.parametrize("size", [1, 7, 8, 9, 17, 256, 1000])
@pytest.mark.parametrize("gamma, decay", [(1.0, False), (0.5, True), (0.9, False), (0.75, True)])
@pytest.mark.parametrize("reset_zero", [False, True])
def test_lif_lanes_equals_scalar_contract(size, gamma, decay, reset_zero):
    v_th = 0.7
    u, x, a = case(size, size, v_th)
    for _ in range(3):  # three steps, state carried
        want_u, want_a, want_spikes = scalar_step(u, x, a, gamma, 1.0 - gamma, v_th, decay, reset_zero)
        en = np.full(size + 3, -1, np.int32)
        k = lif_lanes(u, x, a, en, gamma, 1.0 - gamma, v_th, decay, reset_zero)
        np.testing.assert_array_equal(u, want_u)  # NaN where the contract gives NaN
        np.testing.assert_array_equal(a, want_a)
        assert en[:k].tolist() == want_spikes
        assert (en[size:] == -1).all()  # nothing written past the population
        x = np.roll(x, 1)


def test_if_asr_is_the_spike_count():
    """gamma = 1: the numerator counts spikes exactly (1.0 * a + s)."""
    u, x, a = np.zeros(64), np.full(64, 0.25), np.zeros(64)
    en = np.zeros(64, np.int32)
    for _ in range(40):
        lif_lanes(u, x, a, en, 1.0, 0.0, 1.0, False, False)
    np.testing.assert_array_equal(a, np.full(64, 10.0))


NOJIT = """
import sys, numpy as np
from eventsim.lif_lanes import lif_lanes, lif_lanes_row
d = np.load(sys.argv[1])
u, a = d["u"].copy(), d["a"].copy()
en = np.zeros(u.size, np.int32)
k = lif_lanes(u, d["x"], a, en, 0.5, 0.5, 0.7, True, False)
u2, a2 = d["u"].reshape(1, -1).copy(), d["a"].reshape(1, -1).copy()
en2 = np.zeros((1, u.size), np.int32)
k2 = lif_lanes_row(u2, d["x"].reshape(1, -1), a2, en2, 0, 0.5, 0.5, 0.7, True, False)
assert k2 == k and np.array_equal(u2[0], u, equal_nan=True) and np.array_equal(a2[0], a, equal_nan=True)
assert (en2[0, :k] == en[:k]).all()
np.savez(sys.argv[2], u=u, a=a, en=en[:k])
"""


def test_disable_jit_path(tmp_path):
    u, x, a = case(37, 1, 0.7)
    np.savez(tmp_path / "in.npz", u=u, x=x, a=a)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", NOJIT, tmp_path / "in.npz", tmp_path / "out.npz"], check=True, env=env,
                   capture_output=True, text=True)
    got = np.load(tmp_path / "out.npz")
    en = np.zeros(37, np.int32)
    k = lif_lanes(u, x, a, en, 0.5, 0.5, 0.7, True, False)
    np.testing.assert_array_equal(got["u"], u)
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["en"], en[:k])


@pytest.mark.parametrize("F", [5, 8, 37, 64])
@pytest.mark.parametrize("reset_zero", [False, True])
def test_lif_lanes_row_equals_lif_lanes_on_each_row(F, reset_zero):
    """Row n of [N, F] arrays, addressed by index: the same step as lif_lanes on that row's copy; other rows and
    the list entries past the spikes are untouched."""
    N = 4
    rows = [case(F, 10 * F + n, 0.7) for n in range(N)]
    u = np.stack([r[0] for r in rows])
    x = np.stack([r[1] for r in rows])
    a = np.stack([r[2] for r in rows])
    en = np.full((N, F), -1, np.int32)
    want = [(u[n].copy(), a[n].copy(), np.full(F, -1, np.int32)) for n in range(N)]
    for n in (2, 0, 3, 1):
        u0, a0, e0 = u.copy(), a.copy(), en.copy()
        k = lif_lanes_row(u, x, a, en, n, 0.9, 0.1, 0.7, True, reset_zero)
        wu, wa, we = want[n]
        kk = lif_lanes(wu, x[n].copy(), wa, we, 0.9, 0.1, 0.7, True, reset_zero)
        assert k == kk
        np.testing.assert_array_equal(u[n], wu)
        np.testing.assert_array_equal(a[n], wa)
        np.testing.assert_array_equal(en[n], we)
        others = [m for m in range(N) if m != n]
        np.testing.assert_array_equal(u[others], u0[others])
        np.testing.assert_array_equal(a[others], a0[others])
        np.testing.assert_array_equal(en[others], e0[others])
