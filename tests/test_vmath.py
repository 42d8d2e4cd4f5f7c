"""eventsim.vmath: accuracy against a long-double numpy reference (erf: mpmath), special values,
in-place calls, the NUMBA_DISABLE_JIT path, and that the main loops vectorise."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eventsim import vmath
from eventsim.vmath import BLOCK, SQRT2, erf_into, exp_into, gelu_into, sigmoid_into, tanh_into

REPO = Path(__file__).resolve().parents[1]

# x86 long double has a 64-bit mantissa: 11 bits more than float64, enough for a reference
# good to ~1/1000 ulp. Elsewhere (long double == double) the reference would be no better
# than the code under test, so those tests are skipped.
EXTENDED = np.finfo(np.longdouble).nmant >= 63
needs_ld = pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not x87 extended precision")

# Asserted bounds (max measured over 2e6 points: exp 0.98, sigmoid 1.9, tanh 1.5 ulp).
EXP_ULP = 1.5
SIGMOID_ULP = 2.5
TANH_ULP = 2.0

# erf against mpmath (max measured over 6e6 points: 0.81 ulp; 9.0e-17 absolute for |x| >= 0.5).
ERF_ULP = 1.0
ERF_ABS = 1.0e-16

FUNCS = {"exp": exp_into, "sigmoid": sigmoid_into, "tanh": tanh_into, "erf": erf_into, "gelu": gelu_into}
BOUNDS = {"exp": EXP_ULP, "sigmoid": SIGMOID_ULP, "tanh": TANH_ULP}


def reference(name: str, x: np.ndarray) -> np.ndarray:
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        if name == "exp":
            return np.exp(xl)
        if name == "sigmoid":
            return 1 / (1 + np.exp(-xl))
        return np.tanh(xl)


def run(name: str, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    FUNCS[name](x, out)
    return out


def max_ulp(y: np.ndarray, ref: np.ndarray) -> float:
    """Largest |y - ref| in units of the float64 spacing at ref (2**-1074 for subnormal results).

    Where ref rounds to inf or is NaN, y must equal it exactly."""
    with np.errstate(over="ignore"):
        r64 = ref.astype(np.float64)
    special = ~np.isfinite(r64)
    np.testing.assert_array_equal(y[special], r64[special])
    fin = ~special
    if not fin.any():
        return 0.0
    assert np.isfinite(y[fin]).all()
    err = np.abs(y[fin].astype(np.longdouble) - ref[fin]) / np.spacing(np.abs(r64[fin])).astype(np.longdouble)
    return float(err.max())


def f64_arrays(lo: float, hi: float, max_len: int = 3 * BLOCK):
    return hnp.arrays(
        np.float64, st.integers(0, max_len),
        elements=st.floats(lo, hi, allow_nan=False, allow_subnormal=True),
    )


# --------------------------------------------------------------------------- accuracy


@needs_ld
@settings(deadline=None, max_examples=80)
@given(f64_arrays(-746.0, 709.78))
def test_exp_property(x):
    y = run("exp", x)
    assert max_ulp(y, reference("exp", x)) <= EXP_ULP
    np.testing.assert_array_max_ulp(y, np.exp(x), maxulp=2)


@needs_ld
@settings(deadline=None, max_examples=80)
@given(f64_arrays(-800.0, 800.0))
def test_sigmoid_property(x):
    assert max_ulp(run("sigmoid", x), reference("sigmoid", x)) <= SIGMOID_ULP


@needs_ld
@settings(deadline=None, max_examples=80)
@given(st.one_of(f64_arrays(-40.0, 40.0), f64_arrays(-1e300, 1e300)))
def test_tanh_property(x):
    y = run("tanh", x)
    assert max_ulp(y, reference("tanh", x)) <= TANH_ULP
    np.testing.assert_array_max_ulp(y, np.tanh(x), maxulp=3)
    np.testing.assert_array_equal(run("tanh", -x), -y)  # odd by construction, bit for bit


@needs_ld
@settings(deadline=None, max_examples=60)
@given(f64_arrays(-0.5, 0.5))
def test_tanh_absolute_error_near_zero(x):
    y = run("tanh", x)
    assert np.all(np.abs(y.astype(np.longdouble) - reference("tanh", x)) <= 1e-16)


@needs_ld
@pytest.mark.parametrize(
    "name, lo, hi",
    [
        ("exp", -700.0, 700.0),
        ("exp", -1.0, 1.0),
        ("exp", -746.0, -708.0),  # subnormal results
        ("exp", 700.0, 709.78),
        ("sigmoid", -40.0, 40.0),
        ("sigmoid", -1e-3, 1e-3),
        ("sigmoid", -760.0, -700.0),  # subnormal results
        ("tanh", -40.0, 40.0),
        ("tanh", -0.6, 0.6),
        ("tanh", -1e-6, 1e-6),
    ],
)
def test_dense_sweep(name, lo, hi):
    x = np.random.default_rng(7).uniform(lo, hi, 200_000)
    assert max_ulp(run(name, x), reference(name, x)) <= BOUNDS[name]


@needs_ld
def test_sigmoid_near_half():
    x = np.random.default_rng(3).uniform(-0.1, 0.1, 100_000)
    y = run("sigmoid", x)
    assert np.abs(y.astype(np.longdouble) - reference("sigmoid", x)).max() <= 1.2e-16


# --------------------------------------------------------------------------- special values

TINY = np.finfo(np.float64).smallest_subnormal  # 2**-1074
NORMAL_MIN = np.finfo(np.float64).smallest_normal
INF = np.inf

SPECIAL = {
    "exp": [
        (0.0, 1.0), (-0.0, 1.0), (INF, INF), (-INF, 0.0), (1e-300, 1.0), (-1e-300, 1.0), (TINY, 1.0),
        (709.7827128933841, INF), (710.0, INF), (1e308, INF), (-1e308, 0.0), (-1000.0, 0.0),
        (-745.13, TINY),  # true value 0.5016 * 2**-1074 rounds up
        (-745.14, 0.0),  # true value 0.4966 * 2**-1074 rounds down
        (-746.0, 0.0),
    ],
    "sigmoid": [
        (0.0, 0.5), (-0.0, 0.5), (INF, 1.0), (-INF, 0.0), (1e-300, 0.5), (40.0, 1.0), (800.0, 1.0),
        (1e308, 1.0), (-1e308, 0.0), (-745.0, TINY), (-746.0, 0.0), (-800.0, 0.0),
    ],
    "tanh": [
        (0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (1e-300, 1e-300), (-TINY, -TINY),
        (NORMAL_MIN, NORMAL_MIN), (20.0, 1.0), (-20.0, -1.0), (1e308, 1.0), (-1e308, -1.0),
    ],
    "erf": [
        (0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (TINY, TINY), (-TINY, -TINY),
        (1e-300, 1.1283791670955126e-300), (-NORMAL_MIN, -2.5107269871883543e-308),
        (5.95, 1.0), (-5.95, -1.0), (6.0, 1.0), (7.5, 1.0), (1e308, 1.0), (-1e308, -1.0),
        (5.9, 1.0 - 2.0**-53), (-5.9, 2.0**-53 - 1.0),  # erf rounds to +-1 from |x| = 5.9216 on
    ],
    "gelu": [  # -inf -> NaN: see test_gelu_special_values
        (0.0, 0.0), (-0.0, -0.0), (INF, INF), (1e308, 1e308), (-1e308, -0.0), (8.4, 8.4), (-8.4, -0.0),
        (-40.0, -0.0), (TINY, 0.0), (-TINY, -0.0), (1e-300, 5e-301),
    ],
}


@pytest.mark.parametrize("name", list(FUNCS))
def test_special_values(name):
    x = np.array([p[0] for p in SPECIAL[name]] + [np.nan])
    want = np.array([p[1] for p in SPECIAL[name]] + [np.nan])
    y = run(name, x)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(np.signbit(y[:-1]), np.signbit(want[:-1]))  # tanh(-0.0) is -0.0


@needs_ld
@pytest.mark.parametrize(
    "name, x",
    [
        ("exp", [709.782712893384, 709.78, -708.3964185322641, -708.4, -708.39, -744.0, -740.0, 1e-10, -1e-10]),
        ("sigmoid", [-720.0, -709.0, -708.0, 36.0, 37.0, -37.0, 1e-10, -1e-10]),
        ("tanh", [0.55, np.nextafter(0.55, 0.0), -0.55, 0.5493, 19.0, 18.5, 1e-8, -3e-5, 2e-154]),
    ],
)
def test_boundaries(name, x):
    x = np.array(x)
    assert max_ulp(run(name, x), reference(name, x)) <= BOUNDS[name]


# --------------------------------------------------------------------------- erf and GELU


def erf_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """erf(x) for finite x as an unevaluated float64 sum hi + lo, from mpmath at 140 bits."""
    mp = pytest.importorskip("mpmath")
    hi = np.empty(x.size)
    lo = np.empty(x.size)
    with mp.workprec(140):
        for i, v in enumerate(x.tolist()):
            e = mp.erf(v)
            hi[i] = float(e)
            lo[i] = float(e - hi[i])
    return hi, lo


def assert_erf_accurate(x: np.ndarray) -> None:
    """erf_into(x) within ERF_ULP of the true value, and within ERF_ABS of it where |x| >= 0.5."""
    y = run("erf", x)
    hi, lo = erf_reference(x)
    err = np.abs((y - hi) - lo)  # y - hi is exact where y is within a few ulps of hi
    ulp = err / np.spacing(np.abs(hi))  # 2**-1074 for subnormal results
    worst = int(np.argmax(ulp))
    assert ulp.max() <= ERF_ULP, f"erf({x[worst]!r}): {ulp[worst]:.3f} ulp"
    big = np.abs(x) >= 0.5
    if big.any():
        worst = int(np.argmax(np.where(big, err, 0.0)))
        assert err[big].max() <= ERF_ABS, f"erf({x[worst]!r}): absolute error {err[worst]:.3g}"
    np.testing.assert_array_equal(run("erf", -x), -y)  # odd by construction, bit for bit


@pytest.mark.parametrize(
    "lo, hi, n",
    [
        (-6.5, 6.5, 30_000),
        (-0.5, 0.5, 5_000),
        (0.6, 1.4, 10_000),  # the three regions meet at 0.6875 and 1.25
        (5.8, 6.1, 2_000),  # saturation to 1 at 5.9216; clamp at 6
    ],
)
def test_erf_dense_sweep(lo, hi, n):
    assert_erf_accurate(np.random.default_rng(17).uniform(lo, hi, n))


def test_erf_tiny_arguments():
    rng = np.random.default_rng(18)
    x = rng.choice([-1.0, 1.0], 3_000) * np.exp(rng.uniform(np.log(1e-310), np.log(0.5), 3_000))
    assert_erf_accurate(np.concatenate([x, [TINY, -TINY, 3 * TINY, NORMAL_MIN, 1e-300, 1e-17, 1e-8]]))


def test_erf_region_boundaries():
    """64 ulps either side of each region edge and of the saturation points, and +-0.1 % around them."""
    rng = np.random.default_rng(19)
    parts = []
    for b in (vmath._ERF_SMALL, vmath._ERF_MID, vmath._ERFC_START, 5.9215871957945073, vmath._ERF_SAT):
        parts.append(b + np.arange(-64, 65) * np.spacing(b))
        parts.append(b * rng.uniform(0.999, 1.001, 400))
    x = np.concatenate(parts)
    assert_erf_accurate(np.concatenate([x, -x]))


@settings(deadline=None, max_examples=60)
@given(st.one_of(f64_arrays(-8.0, 8.0), f64_arrays(-1e300, 1e300)))
def test_erf_odd_and_bounded(x):
    y = run("erf", x)
    np.testing.assert_array_equal(run("erf", -x), -y)
    assert np.all(np.abs(y) <= 1.0)
    assert np.all(np.signbit(y) == np.signbit(x))


def gelu_formula(x: np.ndarray) -> np.ndarray:
    """The engine's scalar GELU (``encoder_kernels.gelu_rows``), with Python's ``math.erf``."""
    e = np.array([math.erf(v) for v in (x / SQRT2).tolist()])
    with np.errstate(invalid="ignore"):
        return 0.5 * x * (1.0 + e)


def assert_gelu_close(y: np.ndarray, x: np.ndarray) -> None:
    """y within 2 ulp of gelu_formula(x), or 2.3e-16 * |0.5 x| (the cancellation in 1 + erf for x < 0);
    where the formula gives inf or NaN, y must equal it."""
    f = gelu_formula(x)
    special = ~np.isfinite(f)
    np.testing.assert_array_equal(y[special], f[special])
    fin = ~special
    d = np.abs(y[fin] - f[fin])
    tol = np.maximum(2 * np.spacing(np.abs(f[fin])), 2.3e-16 * np.abs(0.5 * x[fin]))
    worst = int(np.argmax(d / tol)) if d.size else 0
    assert np.all(d <= tol), f"gelu({x[fin][worst]!r}) = {y[fin][worst]!r}, formula {f[fin][worst]!r}"


def test_gelu_matches_engine_formula():
    rng = np.random.default_rng(23)
    edges = np.array([vmath._ERF_SMALL, vmath._ERF_MID, vmath._ERFC_START, 5.9215871957945073, vmath._ERF_SAT])
    edges = np.concatenate([edges, -edges]) * SQRT2
    x = np.concatenate([
        rng.uniform(-12.0, 12.0, 1_000_000),
        rng.uniform(-1e-3, 1e-3, 10_000),
        (edges[:, None] * rng.uniform(0.999, 1.001, (1, 2_000))).ravel(),
        [0.0, -0.0, TINY, -TINY, 1e-300, -1e-300, 1e300, -1e300, 1e308, -1e308, 8.3745, -8.3745, 20.0, -20.0],
    ])
    y = run("gelu", x)
    assert_gelu_close(y, x)
    z = np.random.default_rng(24).uniform(-12.0, 12.0, 20_000)
    assert_erf_accurate(z / SQRT2)  # the erf that GELU uses, on the same kind of points


@settings(deadline=None, max_examples=60)
@given(st.one_of(f64_arrays(-12.0, 12.0), f64_arrays(-1e300, 1e300)))
def test_gelu_property(x):
    y = run("gelu", x)
    assert_gelu_close(y, x)
    z = x.copy()
    gelu_into(z, z)
    np.testing.assert_array_equal(z, y)


def test_gelu_special_values():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0])
    y = run("gelu", x)
    assert y[0] == np.inf
    assert np.isnan(y[1])  # -inf * (1 + erf(-inf)) = -inf * 0, as the formula with math.erf gives
    assert np.isnan(y[2])
    assert y[3] == 0.0 and y[4] == 0.0
    np.testing.assert_array_equal(y, gelu_formula(x))


@numba.njit
def _gelu_rows_in_place(x):
    for n in range(x.shape[0]):
        gelu_into(x[n], x[n])


def _range_mix(rng: np.random.Generator, n: int) -> np.ndarray:
    """Arguments from all three erf ranges interleaved at random, with the edges, specials and odd lengths."""
    edges = np.array([vmath._ERF_SMALL, vmath._ERF_MID, vmath._ERFC_START, vmath._ERF_SAT])
    edges = np.concatenate([edges + k * np.spacing(edges) for k in (-2, -1, 0, 1, 2)])
    x = np.concatenate([rng.uniform(-7.0, 7.0, n), rng.normal(0.0, 1.0, n), edges, -edges, edges * SQRT2,
                        [0.0, -0.0, np.inf, -np.inf, np.nan, TINY, -TINY, 1e300, -1e300]])
    return rng.permutation(x)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, BLOCK - 1, BLOCK + 3, 3 * BLOCK + 5])
def test_range_split_equals_all_ranges_reference(n):
    """erf_into / gelu_into (each element through its own range's list) equal, bit for bit, the
    formulation that evaluates all three ranges for every element and selects."""
    x = _range_mix(np.random.default_rng(n), n)
    for fast, ref in ((erf_into, vmath._erf_reference_into), (gelu_into, vmath._gelu_reference_into)):
        want = ref(x, np.empty_like(x))
        np.testing.assert_array_equal(fast(x, np.empty_like(x)), want)
        y = x.copy()
        np.testing.assert_array_equal(fast(y, y), want)  # in place
        s = np.repeat(x, 2)[::2]  # strided input and output
        o = np.empty(2 * x.size)[::2]
        np.testing.assert_array_equal(fast(s, o), want)


@settings(deadline=None, max_examples=60)
@given(f64_arrays(-8.0, 8.0))
def test_range_split_property(x):
    for fast, ref in ((erf_into, vmath._erf_reference_into), (gelu_into, vmath._gelu_reference_into)):
        np.testing.assert_array_equal(fast(x, np.empty_like(x)), ref(x, np.empty_like(x)))


@pytest.mark.parametrize("width", [32, 100, BLOCK, 4096])
def test_gelu_from_njit_rows(width):
    """How the encoder kernels call it: in place on contiguous rows, from @njit code."""
    x = np.random.default_rng(width).uniform(-10.0, 10.0, (3, width))
    want = run("gelu", x.ravel())
    _gelu_rows_in_place(x)
    np.testing.assert_array_equal(x.ravel(), want)


def test_fit_coefficients_reproduce_erf_constants():
    mp = pytest.importorskip("mpmath")
    assert vmath.fit_coefficients("erf") == list(vmath._ERF_COEFFS)
    assert vmath.fit_coefficients("erf_mid") == list(vmath._ERF_MID_COEFFS)
    assert vmath.fit_coefficients("erfc") == list(vmath._ERFC_COEFFS)
    with mp.workdps(40):
        assert float(mp.erf(vmath._ERF_MID)) == vmath._ERF_MID_C


# --------------------------------------------------------------------------- calling conventions


@pytest.mark.parametrize("name", list(FUNCS))
def test_in_place_and_blocks(name):
    x = np.random.default_rng(5).uniform(-50, 50, 2 * BLOCK + 37)
    x[::97] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -800.0, 800.0, 3.0, -3.0, 0.5][: x[::97].size]
    want = run(name, x)
    y = x.copy()
    r = FUNCS[name](y, y)
    assert np.shares_memory(r, y)
    np.testing.assert_array_equal(y, want)
    for n in (0, 1, 3, BLOCK - 1, BLOCK, BLOCK + 1):  # one block, the remainder, empty
        np.testing.assert_array_equal(run(name, x[:n]), want[:n])


@pytest.mark.parametrize("name", list(FUNCS))
def test_strided_arrays(name):
    base = np.random.default_rng(6).uniform(-30, 30, 3 * 700)
    x = base[::3]
    out = np.empty(2 * x.size)[::2]
    FUNCS[name](x, out)
    np.testing.assert_array_max_ulp(out, run(name, np.ascontiguousarray(x)), maxulp=1)


def test_length_mismatch():
    with pytest.raises(ValueError):
        exp_into(np.zeros(3), np.zeros(4))


def test_fit_coefficients_reproduce_constants():
    pytest.importorskip("mpmath")
    np.testing.assert_allclose(vmath.fit_coefficients("exp"), vmath._EXP_COEFFS, rtol=1e-14)
    np.testing.assert_allclose(vmath.fit_coefficients("tanh"), vmath._TANH_COEFFS, rtol=1e-14)


# --------------------------------------------------------------------------- no JIT

NOJIT_SCRIPT = """
import sys, types
import numpy as np
from eventsim import vmath
assert isinstance(vmath.exp_into, types.FunctionType), "NUMBA_DISABLE_JIT=1 not honoured"
x = np.load(sys.argv[1])
res = {}
with np.errstate(all="ignore"):
    for name in ("exp_into", "sigmoid_into", "tanh_into", "erf_into", "gelu_into"):
        res[name] = getattr(vmath, name)(x, np.empty_like(x))
    y = x.copy()
    vmath.sigmoid_into(y, y)
    res["sigmoid_in_place"] = y
    y = x.copy()
    vmath.gelu_into(y, y)
    res["gelu_in_place"] = y
np.savez(sys.argv[2], **res)
"""


def test_disable_jit_python_path(tmp_path):
    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.uniform(-40, 40, BLOCK),  # more than one block
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -TINY, 0.55, 709.79, 800.0, -745.13, -745.14, -800.0],
        [0.6875, -0.96875, 1.25, -1.2499999999999998, 5.86, -6.0, 8.3, -8.3, -1.8, -3.0],  # erf / GELU ranges
    ])
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", NOJIT_SCRIPT, tmp_path / "x.npy", tmp_path / "res.npz"],
                   check=True, env=env, capture_output=True, text=True)
    res = np.load(tmp_path / "res.npz")
    for name, key in (("exp", "exp_into"), ("sigmoid", "sigmoid_into"), ("tanh", "tanh_into")):
        py, jit = res[key], run(name, x)
        fin = np.isfinite(jit)
        np.testing.assert_array_equal(py[~fin], jit[~fin])
        np.testing.assert_array_equal(np.signbit(py), np.signbit(jit))
        np.testing.assert_array_max_ulp(py[fin], jit[fin], maxulp=2)  # FMA contraction only when compiled
        if EXTENDED:
            assert max_ulp(py, reference(name, x)) <= BOUNDS[name]
    np.testing.assert_array_equal(res["sigmoid_in_place"], res["sigmoid_into"])
    py, jit = res["erf_into"], run("erf", x)
    fin = np.isfinite(jit)
    np.testing.assert_array_equal(py[~fin], jit[~fin])
    np.testing.assert_array_equal(np.signbit(py), np.signbit(jit))
    np.testing.assert_array_max_ulp(py[fin], jit[fin], maxulp=2)
    assert_gelu_close(res["gelu_into"], x)
    np.testing.assert_array_equal(res["gelu_in_place"], res["gelu_into"])


# --------------------------------------------------------------------------- vectorisation


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="checks x86 SIMD codegen")
def test_main_loops_vectorise():
    """Each pass compiles to SIMD code: vector float ops / 64-bit integer shifts, and no gathers."""
    opts = {k: v for k, v in vmath._JIT.items() if k != "cache"}  # fresh compile: cached code can't be inspected
    f8 = numba.types.float64[::1]
    i8 = numba.types.int64[::1]
    cases = [
        (vmath._exp_reduce, (f8, f8, f8, f8), r"fmul[a-z ]*<\d+ x double>"),
        (vmath._exp_scale_bits, (i8, i8, numba.types.int64), r"shl[a-z ]*<\d+ x i64>"),
        (vmath._exp_finish, (f8, f8, f8, f8), r"fmul[a-z ]*<\d+ x double>"),
        (vmath.sigmoid_into, (f8, f8), r"fdiv[a-z ]*<\d+ x double>"),
        (vmath.tanh_into, (f8, f8), r"fdiv[a-z ]*<\d+ x double>"),
        (vmath._erf_reduce, (f8, f8, f8), r"fdiv[a-z ]*<\d+ x double>"),
        (vmath._erf_finish, (f8, f8, f8), r"fmul[a-z ]*<\d+ x double>"),
        (vmath._gelu_finish, (f8, f8, f8, f8), r"fmul[a-z ]*<\d+ x double>"),
        # gelu_into's own pass: 8-lane fused multiply-adds (x / SQRT2 without a divide, the two erf ranges)
        (vmath.gelu_into, (f8, f8), r"llvm\.fma\.v8f64"),
    ]
    for func, sig, pattern in cases:
        fresh = numba.njit(**opts)(func.py_func)
        fresh.compile(sig)
        ir = fresh.inspect_llvm(sig)
        assert re.search(pattern, ir), f"{func.__name__}: no {pattern!r} in the LLVM IR"
        assert "masked.gather" not in ir and "masked.scatter" not in ir, func.__name__


def test_gelu_both_block_paths_equal_reference():
    """gelu_into switches per block between the near-range pass and the per-range lists (by the share of
    range-3 arguments in the block before); blocks of narrow and wide arguments in turn exercise both
    paths and both switches, in place and not, against the all-ranges reference bit for bit."""
    rng = np.random.default_rng(7)
    parts = [rng.normal(0.0, s, BLOCK) for s in (0.5, 4.0, 4.0, 0.7, 3.0, 0.3)]
    parts.append(_range_mix(rng, BLOCK // 3))
    x = np.concatenate(parts)
    want = vmath._gelu_reference_into(x, np.empty_like(x))
    np.testing.assert_array_equal(gelu_into(x, np.empty_like(x)), want)
    y = x.copy()
    np.testing.assert_array_equal(gelu_into(y, y), want)


def test_gelu_quotient_without_divide_is_correctly_rounded():
    """z = x / SQRT2 is formed without a divide (Markstein's correction); where its last bit can matter
    (|x| from 1e-17 to 9, log-uniform) GELU equals the reference, which divides, bit for bit."""
    rng = np.random.default_rng(11)
    x = rng.choice([-1.0, 1.0], 400_000) * 10.0 ** rng.uniform(-17.0, 0.95, 400_000)
    want = vmath._gelu_reference_into(x, np.empty_like(x))
    np.testing.assert_array_equal(gelu_into(x, np.empty_like(x)), want)
