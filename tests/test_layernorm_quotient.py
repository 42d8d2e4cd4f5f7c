"""LayerNorm's quotient without a divide per element equals the divide, and vmath.fma rounds once."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from numba import njit

from eventsim.encoder_kernels import _row_sq_dev, _row_sum, layernorm_rows
from eventsim.vmath import fma


@njit(cache=True)
def _fma_array(a, b, c, out):
    for i in range(a.shape[0]):
        out[i] = fma(a[i], b[i], c[i])


@njit(cache=True)
def _corrected_quotients(a, b, out):
    """The layernorm's quotient, ``q + (a - q b) / b``-style correction, for arbitrary pairs."""
    for i in range(a.shape[0]):
        y = 1.0 / b[i]
        q = a[i] * y
        out[i] = fma(fma(-q, b[i], a[i]), y, q)


def test_fma_rounds_once():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20_000) * np.exp(rng.uniform(-40, 40, 20_000))
    b = rng.normal(size=20_000) * np.exp(rng.uniform(-40, 40, 20_000))
    c = -a * b * (1 + rng.normal(size=20_000) * 1e-12)  # heavy cancellation: a separate rounding of a*b shows
    out = np.empty_like(a)
    _fma_array(a, b, c, out)
    want = np.array([float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c)])
    np.testing.assert_array_equal(out, want)
    _fma_array(np.array([np.inf, np.nan, 1.0]), np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, np.inf]), out[:3])
    assert math.isnan(out[0]) and math.isnan(out[1]) and out[2] == np.inf


@pytest.mark.parametrize("kind", ["wide", "all_ones_divisor", "near_one", "integers"])
def test_corrected_quotient_is_the_divide(kind):
    """Markstein: with y = RN(1/b) and q = RN(a y), RN(q + RN(a - q b) y) = RN(a / b); checked on 10^6 pairs
    of each kind (divisors with an all-ones significand are the classic hard case)."""
    rng = np.random.default_rng(["wide", "all_ones_divisor", "near_one", "integers"].index(kind))
    n = 1_000_000
    a = rng.normal(size=n) * np.exp(rng.uniform(-30, 30, n))
    if kind == "wide":
        b = np.exp(rng.uniform(-20, 20, n))
    elif kind == "all_ones_divisor":
        b = np.nextafter(2.0 ** rng.integers(-10, 10, n), 0.0)
    elif kind == "near_one":
        b = 1.0 + rng.integers(0, 2 ** 20, n) * 2.0 ** -52
    else:
        a = rng.integers(1, 2 ** 53, n).astype(np.float64)
        b = rng.integers(1, 2 ** 53, n).astype(np.float64)
    out = np.empty_like(a)
    _corrected_quotients(a, b, out)
    np.testing.assert_array_equal(out, a / b)


def test_layernorm_rows_equals_divide_formula():
    rng = np.random.default_rng(5)
    for F in (1, 7, 64, 257, 1024):
        x = rng.normal(size=(16, F)) * np.exp(rng.uniform(-5, 5, (16, 1))) + rng.normal(size=(16, 1))
        w, b = rng.normal(size=F), rng.normal(size=F)
        want = np.empty_like(x)
        for n in range(16):  # the same statistics, then the divide as written
            mu = _row_sum(x[n]) / F
            sd = math.sqrt(_row_sq_dev(x[n], mu) / F + 1e-5)
            want[n] = (x[n] - mu) / sd * w + b
        got = x.copy()
        layernorm_rows(got, w, b, 1e-5, np.array([[0, F, 0]], np.int64), np.zeros((13, 1), np.int64))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("tiny", [False, True])
def test_attention_row_sum_division_is_the_divide(tiny):
    """The attention's output over its softmax row sums (one divide per query, then Markstein's correction)
    equals the element-wise divide bit for bit; with a softmax numerator below 2**-960 in the head the
    helper divides element by element (the remainder could underflow), again equal to the divide."""
    from eventsim.encoder_kernels import _divide_by_row_sums

    rng = np.random.default_rng(int(tiny))
    N, d = 32, 64
    e = np.exp(-rng.exponential(3.0, (N, N)))
    e[rng.random((N, N)) < 0.1] = 0.0
    if tiny:
        e[3, 5] = 2.0 ** -1000
    np.fill_diagonal(e, 1.0)  # each query's row maximum: exp(0)
    rs = e.sum(axis=0)  # e[m, n]: key m, query n; each query's sum over keys
    spikes = rng.random((N, d)) < 0.3  # value spikes (key j, feature c)
    ot = (spikes.T.astype(float) @ e).copy()  # ot[c, n]: sum over keys j with a spike in c
    want = ot / rs[None, :]
    _divide_by_row_sums(ot, rs, np.empty(N), e)
    np.testing.assert_array_equal(ot, want)
