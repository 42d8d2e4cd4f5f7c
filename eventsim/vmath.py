"""Vectorisable float64 ``exp``, ``sigmoid``, ``tanh``, ``erf`` and GELU over 1-D arrays (Numba).

Numba's PyPI llvmlite ships without SVML, so a loop that calls ``math.exp``,
``math.tanh`` or ``math.erf`` stays a loop of scalar libm calls. The kernels here use only
adds, multiplies, divides, compares/selects and 64-bit integer adds and shifts,
which LLVM turns into SIMD code (``<4 x double>``/ymm on AVX2 machines).

API (all write into ``out`` and return it; ``out`` may be ``x`` itself, but must
not otherwise overlap it):

* :func:`exp_into` -- ``out[i] = exp(x[i])``
* :func:`sigmoid_into` -- ``out[i] = 1 / (1 + exp(-x[i]))``
* :func:`tanh_into` -- ``out[i] = tanh(x[i])``
* :func:`erf_into` -- ``out[i] = erf(x[i])``
* :func:`gelu_into` -- ``out[i] = 0.5 * x[i] * (1 + erf(x[i] / SQRT2))``, the
  exact (erf) GELU with exactly this operation order and
  ``SQRT2 = math.sqrt(2.0)`` (:data:`SQRT2`), as the encoder contract writes it
  (and the torch oracle computes it). ``gelu(inf) = inf``; ``gelu(-inf)`` is NaN
  (``-inf * (1 + -1)``, what that formula gives with ``math.erf`` too);
  ``gelu(-0.0) = -0.0``; NaN is passed through.

``x`` and ``out`` are 1-D float64 arrays of equal length. Called from other
``@njit`` code there is no dispatch cost; from Python each call costs ~0.5 us. Work proceeds in
blocks of :data:`BLOCK` elements through a small scratch buffer (allocated
once per call), each block in a few straight-line passes; every pass reads
either the input or scratch and writes either scratch or the output, so in-place
calls keep the vector path (LLVM's runtime alias checks still pass).

Method (textbook; see J.-M. Muller, *Elementary Functions: Algorithms and
Implementation*, chapter on range reduction, and W. J. Cody and W. Waite,
*Software Manual for the Elementary Functions*, 1980, EXP):

* ``exp``: ``x = k ln2 + r`` with ``k = round(x / ln2)``. ``k`` is rounded by
  adding ``1.5 * 2**52`` (the low mantissa bits of the sum then hold ``k`` in
  two's complement), so it never leaves the floating-point lanes. ``r`` is
  formed with the Cody--Waite split ``ln2 = LN2_HI + LN2_LO`` (``LN2_HI`` has
  32 significant bits, so ``k * LN2_HI`` is exact for ``|k| < 2**21``), giving
  ``|r| <= ln2/2 + 1e-13``. ``exp(r) = 1 + (r + r^2 h(r))`` with ``h`` a
  degree-10 polynomial (Horner) fitted to ``(e^r - 1 - r) / r^2`` by Chebyshev
  interpolation (:func:`fit_coefficients`; truncation error < 4e-19 relative).
  ``2**k`` is built by integer arithmetic on an ``int64`` view of the scratch
  array as ``2**k1 * 2**k2`` with ``k1 = round(k/2)`` and ``k2 = k - k1``, so
  both factors are normal doubles over the whole range ``k in [-1076, 1024]``;
  ``p * 2**k1`` is exact and the single rounding happens in ``* 2**k2``, which
  makes results in the subnormal range correctly scaled (no flush to zero) and
  overflow a clean ``inf``. Inputs are clamped to ``[-746, 710]`` first (so
  ``+-inf`` need no special case); results are ``0`` below about ``-745.1332``
  (true value under ``2**-1075``) and ``inf`` above about ``709.7827``; NaN is
  passed through.
* ``sigmoid``: with ``e = exp(-|x|)`` (never overflows),
  ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for ``x < 0``; no
  cancellation and correct tails down to the subnormal range. The rounding
  error of ``1 + e`` is recovered exactly by Fast2Sum (Dekker 1971) and
  applied as a first-order correction, which needs no second division.
* ``tanh``: for ``|x| < 0.55`` an odd polynomial ``x + x t G(t)``, ``t = x^2``,
  ``G`` of degree 10 fitted to ``(tanh(x) - x) / x^3`` (relative truncation
  error < 6e-18; no cancellation near 0 and ``tanh(-0.0) = -0.0``). For
  ``|x| >= 0.55`` (where ``tanh >= 0.5``) ``sign(x) (1 - 2 / (exp(2|x|) + 1))``,
  which saturates to ``+-1`` exactly once ``exp`` overflows or ``2/(e+1)``
  drops below half an ulp of 1.
* ``erf``: odd by construction (``erf(-x) == -erf(x)`` bit for bit); three
  ranges of ``a = |x|``, all evaluated for every element and selected,
  branch-free:

  - ``a < 0.6875``: ``x + x g(t)``, ``t = x^2``, ``g`` of degree 10 fitted to
    ``erf(x) / x - 1`` (absolute truncation error < 1e-19; the final step is
    one fused multiply-add, ``erf(-0.0) = -0.0``, no underflow to zero).
  - ``0.6875 <= a < 1.25``: ``C + m(a - 0.96875)`` with ``C = erf(0.96875)``
    rounded to float64 and ``m`` of degree 14 fitted to ``erf(0.96875 + s) - C``
    (truncation < 2e-18). ``a - 0.96875`` is exact (Sterbenz) and ``|m| <= 0.17``,
    so the error is about the final rounding.
  - ``a >= 1.25``: ``1 - erfc(a)`` with ``erfc(a) = exp(R(y) - a^2) / (2 + a)``,
    ``v = 4 / (2 + a)``, ``y = v - 0.875`` (exact), ``R`` of degree 16 fitted to
    ``log((2 + a) erfc(a)) + a^2`` (the ``t = 2 / (2 + a)`` substitution of
    Numerical Recipes' ``erfccheb``, 3rd ed., section 6.2.2; relative
    truncation < 3e-18). ``a`` is clamped to ``[1.25, 6]`` first: from
    ``a = 5.9216`` on, ``erfc(a)`` is below half an ulp of 1, so ``+-inf`` and
    everything past 6 give ``+-1`` exactly and the exponent stays in range.
    ``R - a^2`` is one fused multiply-add and lies in ``(-2, -1]`` for
    ``a < 1.45`` (Numerical Recipes' ``t exp(...)``, ``t = 2 / (2 + a)``, has
    it one ``ln 2`` lower, a binade up, with twice the rounding error), and
    ``exp`` is the pass above. As ``erfc <= 0.077`` there, its few-ulp
    relative error adds < 0.3 ulp of ``erf``.

  Pass 1 leaves one scratch row for the final pass: the finished ``erf``
  (``|.| < 1``) in the first two ranges, ``+-2v`` (``|.| >= 1``: the sign and
  the factor ``v``) in the last; so erf needs the same five scratch rows as
  the others, GELU one more (a copy of ``x``).
* GELU: ``z = x / SQRT2``, ``e = erf(z)`` as above, then ``0.5 * x * (1 + e)``. :func:`gelu_into` forms
  ``z`` without a divide (Markstein's correction: the correctly rounded quotient) and, while few
  arguments reach range 3, evaluates ranges 1 and 2 in every lane of one 8-lane pass and lists only the
  range-3 lanes (the same values, bit for bit, as the per-range lists and the all-ranges reference).
  For ``x < 0`` the sum ``1 + e`` cancels (exactly, for ``e <= -0.5``), so the
  result's error there is ``|0.5 x|`` times ``erf``'s absolute error, as for
  any implementation of this formula (``math.erf`` included); from
  ``x = -8.3745`` down it is ``-0.0`` (and ``x`` itself from ``x = 8.3745`` up).

Measured accuracy against a long-double numpy reference (2e6 random points per
range; ``tests/test_vmath.py`` asserts slightly looser bounds): exp <= 0.98 ulp on
[-700, 700] (subnormal results: <= 0.96 units of 2**-1074), sigmoid <= 1.9 ulp and
tanh <= 1.5 ulp on [-40, 40]; tanh absolute error <= 4e-17 on [-0.5, 0.5].
erf against ``mpmath`` at 140 bits (6e6 points of [0, 6.5]: 1.5e6 uniform, 4e6 in
[0.45, 1.6] around the range edges, 4e5 in [0, 1.5], 1e5 log-uniform in
[1e-300, 0.5]; odd by construction): <= 0.81 ulp, absolute error <= 9.0e-17
for ``|x| >= 0.5`` (glibc's ``math.erf`` on the 1.2e6 ``x / SQRT2`` of the
GELU check below: 1.02 ulp, 9.9e-17; this code there: 0.80 ulp, 8.9e-17).
GELU against the same formula with ``math.erf`` (1.2e6 points of [-12, 12]):
bit-equal in 99.1 % of them, else within 2 ulp of the result (``1 + e`` rounding
to a neighbouring double moves the product by up to 1.3 ulp) or within
``2.3e-16 * |0.5 x|`` (the cancellation for ``x < 0``). ``gelu_into`` on 32768
elements took ~4 ns per element against ~15 ns for the scalar ``math.erf``
loop (Zen 4, AVX-512, Numba 0.68) with every range evaluated for every element;
on this project's Emerald Rapids machine the near-range pass takes 1.4-1.8 ns per
element for normal arguments with sigma 0.6-1.0 (``benchmarks/bench_encoder_kernels.py``).
With ``NUMBA_DISABLE_JIT=1`` the same code runs on numpy scalars (no FMA
contraction there, so results can differ from the compiled ones in the last bit).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

from eventsim.llvm_lanes import declare, splat

__all__ = [
    "BLOCK", "SQRT2", "exp_into", "sigmoid_into", "tanh_into", "erf_into", "gelu_into", "fit_coefficients", "fma",
]

#: Elements per block; 5 scratch rows of this size (20 KiB) stay in L1.
BLOCK = 512

_LOG2E = 1.4426950408889634  # 1 / ln 2
_LN2_HI = 6.93147180369123816490e-01  # 0x3FE62E42FEE00000: low 21 mantissa bits zero
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_SHIFTER = 6755399441055744.0  # 1.5 * 2**52: x + _SHIFTER rounds x to an integer k
_SHIFTER_BITS = 0x4338000000000000  # bit pattern of _SHIFTER; bits(k + _SHIFTER) - this == k
_EXP_LO = -746.0  # exp(-746) < 2**-1076: rounds to +0
_EXP_HI = 710.0  # exp(710) > DBL_MAX: overflows to inf

# h(r) ~ (e^r - 1 - r) / r^2 on |r| <= 1.01 ln2/2, degree 10 (fit_coefficients("exp")).
_E0 = 0.5
_E1 = 0.1666666666666667
_E2 = 0.04166666666666667
_E3 = 0.008333333333325544
_E4 = 0.0013888888888883327
_E5 = 0.00019841269876864356
_E6 = 2.4801587327007187e-05
_E7 = 2.755725283351691e-06
_E8 = 2.75572718102198e-07
_E9 = 2.5106274733573296e-08
_E10 = 2.0915442297780116e-09

# G(t) ~ (tanh(x) - x) / x^3, t = x^2 in [0, 0.55^2], degree 10 (fit_coefficients("tanh")).
_TANH_SMALL = 0.55
_T0 = -0.3333333333333333
_T1 = 0.13333333333332714
_T2 = -0.053968253967434016
_T3 = 0.021869488493666944
_T4 = -0.008863234397814355
_T5 = 0.003592110378689024
_T6 = -0.001455661830100716
_T7 = 0.0005889360520074057
_T8 = -0.0002346347410887237
_T9 = 8.511313685577671e-05
_T10 = -2.060276537636634e-05

#: ``sqrt(2)``: GELU divides by it (``x / sqrt(2)``, the contract's and the torch oracle's expression; a multiply
#: by ``1 / math.sqrt(2.0)``, one ulp below the correctly rounded ``1/sqrt(2)``, differs in about 7 % of results).
SQRT2 = math.sqrt(2.0)
_RSQRT2 = 1.0 / SQRT2  # the reciprocal of the double SQRT2, rounded to nearest (Markstein's y)

# erf, region 1 (|x| < _ERF_SMALL): g(t) ~ erf(x) / x - 1, t = x^2 in [0, _ERF_SMALL^2], degree 10
# (fit_coefficients("erf")).
_ERF_SMALL = 0.6875
_G0 = 0.1283791670955126
_G1 = -0.3761263890318375
_G2 = 0.11283791670954578
_G3 = -0.026866170644950012
_G4 = 0.005223977622367738
_G5 = -0.0008548326718903275
_G6 = 0.00012055314148002768
_G7 = -1.4924900692999103e-05
_G8 = 1.6442870925579726e-06
_G9 = -1.605673647707473e-07
_G10 = 1.1947101052868964e-08

# erf, region 2 (_ERF_SMALL <= |x| < _ERFC_START): erf(_ERF_MID + s) ~ _ERF_MID_C + m(s), degree 14
# (fit_coefficients("erf_mid")); _ERF_MID_C is erf(_ERF_MID) rounded to float64.
_ERF_MID = 0.96875
_ERF_MID_C = 0.8293191505933152
_M0 = -5.230768355648535e-17
_M1 = 0.44144831841852683
_M2 = -0.427653058467948
_M3 = 0.1290431607877418
_M4 = 0.08004573848279078
_M5 = -0.06973067190308668
_M6 = 0.0011716658689705176
_M7 = 0.01627824083643294
_M8 = -0.0041934574728154485
_M9 = -0.002262463983175361
_M10 = 0.0011838490363895416
_M11 = 0.00016184626890589565
_M12 = -0.00020539281604115638
_M13 = 6.576203782763205e-06
_M14 = 2.5278599750740012e-05

# erf, region 3 (|x| >= _ERFC_START): erfc(a) = exp(R(y) - a^2) / (2 + a), y = 4 / (2 + a) - _ERFC_CENTER,
# a clamped to [_ERFC_START, _ERF_SAT]; R ~ log((2 + a) erfc(a)) + a^2, degree 16 (fit_coefficients("erfc")).
_ERFC_START = 1.25
_ERF_SAT = 6.0  # erfc(6) = 2.2e-17 < 2**-54: 1 - erfc rounds to 1 from a = 5.9216 on
_ERFC_CENTER = 0.875  # y = v - 0.875 is exact (Sterbenz) for v = 4 / (2 + a) in [0.5, 1.231]
_R0 = -0.06189864616155345
_R1 = 0.6586966847674204
_R2 = 0.06383915137397463
_R3 = -0.04066865267944483
_R4 = -0.014820803164098294
_R5 = 0.0067731275157541584
_R6 = 0.00363488320413769
_R7 = -0.0018141642402281278
_R8 = -0.0009068288735746444
_R9 = 0.0006177099923587995
_R10 = 0.0001947360568338857
_R11 = -0.00022240856549074836
_R12 = -1.9106169700498912e-05
_R13 = 7.37520165477736e-05
_R14 = -1.1125131568177308e-05
_R15 = -1.8183558389927374e-05
_R16 = 6.816482141469882e-06

_EXP_COEFFS = (_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10)
_TANH_COEFFS = (_T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7, _T8, _T9, _T10)
_ERF_COEFFS = (_G0, _G1, _G2, _G3, _G4, _G5, _G6, _G7, _G8, _G9, _G10)
_ERF_MID_COEFFS = (_M0, _M1, _M2, _M3, _M4, _M5, _M6, _M7, _M8, _M9, _M10, _M11, _M12, _M13, _M14)
_ERFC_COEFFS = (_R0, _R1, _R2, _R3, _R4, _R5, _R6, _R7, _R8, _R9, _R10, _R11, _R12, _R13, _R14, _R15, _R16)


# error_model="numpy": IEEE division (no ZeroDivisionError branch, which would keep loops scalar).
# fastmath={"contract"}: lets LLVM fuse a*b + c into FMA; no other fast-math licence (NaN/inf/-0.0 and
# evaluation order are kept), and every fused step above is at least as accurate as the unfused one.
_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}}
_DISABLE_JIT = bool(config.DISABLE_JIT)

# --------------------------------------------------------------------------- passes


@njit(inline="always", **_JIT)
def _exp_poly(r):
    """``exp(r)`` for the reduced ``|r| <= ln(2) / 2``: ``1 + r + r^2 h(r)``."""
    h = _E10
    h = h * r + _E9
    h = h * r + _E8
    h = h * r + _E7
    h = h * r + _E6
    h = h * r + _E5
    h = h * r + _E4
    h = h * r + _E3
    h = h * r + _E2
    h = h * r + _E1
    h = h * r + _E0
    return 1.0 + (r + (r * r) * h)


@njit(**_JIT)
def _exp_reduce(src, tb, ub, pb):
    """Pass 1 on ``src``: ``tb = k + SHIFTER``, ``ub = round(k/2) + SHIFTER``, ``pb = exp(r)``."""
    for j in range(src.shape[0]):
        xi = src[j]
        xc = xi if xi > _EXP_LO else _EXP_LO  # NaN -> _EXP_LO here; restored below
        xc = xc if xc < _EXP_HI else _EXP_HI
        t = xc * _LOG2E + _SHIFTER
        kf = t - _SHIFTER
        u = kf * 0.5 + _SHIFTER  # kf/2 is exact; round half to even
        r = (xc - kf * _LN2_HI) - kf * _LN2_LO
        p = _exp_poly(r)
        tb[j] = t
        ub[j] = u
        pb[j] = p if xi == xi else xi  # NaN * 2**k stays NaN


@njit(**_JIT)
def _exp_scale_bits(ti, ui, m):
    """Pass 2, integer lanes: turn ``k + SHIFTER`` / ``k1 + SHIFTER`` bits into the bits of ``2**k2`` / ``2**k1``."""
    for j in range(m):
        k1 = ui[j] - _SHIFTER_BITS
        k2 = ti[j] - ui[j]  # (k + S) - (k1 + S) = k - k1
        ui[j] = (k1 + 1023) << 52
        ti[j] = (k2 + 1023) << 52


@njit(**_JIT)
def _exp_finish(pb, ub, tb, dst):
    """Pass 3: ``dst[j] = exp(r) * 2**k1 * 2**k2`` (first product exact, one rounding)."""
    for j in range(dst.shape[0]):
        dst[j] = (pb[j] * ub[j]) * tb[j]


@njit(**_JIT)
def _exp_block(src, dst, pb, tb, ub, ti, ui):
    """``dst = exp(src)`` for one block (``dst`` may be ``src``), through the three passes."""
    m = src.shape[0]
    _exp_reduce(src, tb, ub, pb)
    _exp_scale_bits(ti, ui, m)
    _exp_finish(pb, ub, tb, dst)


@njit(inline="always", **_JIT)
def _erf_small1(xc):
    """Range 1: ``x + x g(x^2)``."""
    t = xc * xc
    g = _G10
    g = g * t + _G9
    g = g * t + _G8
    g = g * t + _G7
    g = g * t + _G6
    g = g * t + _G5
    g = g * t + _G4
    g = g * t + _G3
    g = g * t + _G2
    g = g * t + _G1
    g = g * t + _G0
    return xc + xc * g


@njit(inline="always", **_JIT)
def _erf_mid_poly(s):
    """Range 2 on ``s = |x| - _ERF_MID``: ``C + m(s)``."""
    p = _M14
    p = p * s + _M13
    p = p * s + _M12
    p = p * s + _M11
    p = p * s + _M10
    p = p * s + _M9
    p = p * s + _M8
    p = p * s + _M7
    p = p * s + _M6
    p = p * s + _M5
    p = p * s + _M4
    p = p * s + _M3
    p = p * s + _M2
    p = p * s + _M1
    p = p * s + _M0
    return _ERF_MID_C + p


@njit(inline="always", **_JIT)
def _erfc_poly(a3):
    """Range 3 on ``|x|`` (clamped): ``v = 4 / (2 + a)`` and ``R(v - center)``; ``erfc = exp(R - a^2) v / 4``."""
    v = 4.0 / (2.0 + a3)
    y = v - _ERFC_CENTER
    r = _R16
    r = r * y + _R15
    r = r * y + _R14
    r = r * y + _R13
    r = r * y + _R12
    r = r * y + _R11
    r = r * y + _R10
    r = r * y + _R9
    r = r * y + _R8
    r = r * y + _R7
    r = r * y + _R6
    r = r * y + _R5
    r = r * y + _R4
    r = r * y + _R3
    r = r * y + _R2
    r = r * y + _R1
    r = r * y + _R0
    return v, r


@njit(**_JIT)
def _erf_reduce(src, qb, eb):
    """erf pass 1 on ``src``: ``qb`` = erf for ``|x| < 1.25``, else ``+-2v`` (``|.| >= 1``); ``eb`` = exponent.

    ``eb[j] = R(y) - a^2`` is the argument of ``exp`` for the ``erfc`` region (finite in every lane).
    """
    for j in range(src.shape[0]):
        xi = src[j]
        a = abs(xi)
        # region 1: x + x g(x^2) on x clamped to the region (keeps unused lanes finite)
        xc = xi if xi > -_ERF_SMALL else -_ERF_SMALL  # NaN -> -_ERF_SMALL here; restored below
        xc = xc if xc < _ERF_SMALL else _ERF_SMALL
        small = _erf_small1(xc)
        # region 2: C + m(a - _ERF_MID)
        mid = _erf_mid_poly((a if a < _ERFC_START else _ERFC_START) - _ERF_MID)
        mid = mid if xi > 0.0 else -mid
        # region 3: exp argument and the factor v = 4 / (2 + a) (erfc = exp(...) * v / 4)
        a3 = a if a > _ERFC_START else _ERFC_START  # NaN -> _ERFC_START
        a3 = a3 if a3 < _ERF_SAT else _ERF_SAT
        v, r = _erfc_poly(a3)
        eb[j] = r - a3 * a3
        big = v + v  # in [1, 2.47]: marks the lane as an erfc lane
        big = big if xi > 0.0 else -big
        q = small if a < _ERF_SMALL else mid
        q = q if a < _ERFC_START else big
        qb[j] = q if xi == xi else xi


@njit(**_JIT)
def _erf_core(src, qb, eb, pb, tb, ub, ti, ui):
    """erf passes 1 and 2 for one block: ``qb`` as in :func:`_erf_reduce`, ``eb = exp(R(y) - a^2)``."""
    m = src.shape[0]
    _erf_reduce(src, qb, eb)
    _exp_block(eb[:m], eb[:m], pb, tb, ub, ti, ui)


@njit(**_JIT)
def _erf_finish(qb, eb, dst):
    """erf pass 3: ``dst = q`` where ``|q| < 1``, else ``sign(q) (1 - erfc)``, ``erfc = (|q| / 8) exp(...)``."""
    for j in range(dst.shape[0]):
        q = qb[j]
        sgn = 1.0 if q > 0.0 else -1.0
        big = sgn - (0.125 * q) * eb[j]  # 0.125 q exact; one rounding (fused)
        dst[j] = q if abs(q) < 1.0 else big  # NaN: big is NaN


@njit(**_JIT)
def _gelu_finish(vb, qb, eb, dst):
    """GELU pass 3: ``e`` as in :func:`_erf_finish`, ``dst = 0.5 * x * (1 + e)``."""
    for j in range(dst.shape[0]):
        q = qb[j]
        sgn = 1.0 if q > 0.0 else -1.0
        big = sgn - (0.125 * q) * eb[j]
        e = q if abs(q) < 1.0 else big
        dst[j] = 0.5 * vb[j] * (1.0 + e)


@njit(**_JIT)
def _check(x, out):
    n = x.shape[0]
    if out.shape[0] != n:
        raise ValueError("x and out must have the same length")
    return n


@njit(**_JIT)
def _scratch(n):
    """Five float64 rows of ``min(n, BLOCK)`` elements and int64 views of the two exponent rows."""
    bs = min(n, BLOCK)
    buf = np.empty((5, bs), dtype=np.float64)
    tb = buf[0]
    ub = buf[1]
    return buf[2], buf[3], buf[4], tb, ub, tb.view(np.int64), ub.view(np.int64)


@njit(**_JIT)
def _scratch6(n):
    """:func:`_scratch` plus a sixth float64 row, in one allocation."""
    bs = min(n, BLOCK)
    buf = np.empty((6, bs), dtype=np.float64)
    tb = buf[0]
    ub = buf[1]
    return buf[2], buf[3], buf[4], tb, ub, tb.view(np.int64), ub.view(np.int64), buf[5]


# --------------------------------------------------------------------------- erf / GELU: one range per element
#
# Per block: (1) a split pass sorts the arguments z into three lists, one per range (range 3 also takes NaN),
# eight elements at a time: compare, then compress each range's lanes to the front of a vector and store all
# eight lanes at that list's end (the lanes past the compressed ones are zero), advancing the end by the number
# of lanes in the range; the two range masks of each group of eight are kept. (2) Each list runs through its
# own range's loop, in place, over a length rounded up to a multiple of eight (the extra lanes hold zeros or
# finished values: finite, discarded). (3) A merge pass expands each group's results back from the three lists
# with the kept masks and writes erf, or GELU's ``0.5 * x * (1 + e)``, to the output.
#
# The compress/expand steps are LLVM vector intrinsics (``llvm.experimental.vector.compress``,
# ``llvm.masked.expandload``; one instruction each with AVX-512, legalised elsewhere), emitted through
# ``numba.extending.intrinsic``; with NUMBA_DISABLE_JIT they are plain Python functions.

_LANES = 8


@njit(**_JIT)
def _up8(n):
    """``n`` rounded up to a multiple of 8."""
    return (n + 7) & -8


if _DISABLE_JIT:

    def _f2i(x):
        """Bits of a float64 as int64."""
        return np.float64(x).view(np.int64)

    def _i2f(i):
        """float64 with the bits of an int64."""
        return np.int64(i).view(np.float64)

    def fma(a, b, c):
        """``a * b + c`` rounded once (exact rational arithmetic; no-JIT path only)."""
        if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
            return a * b + c
        return float(Fraction(a) * Fraction(b) + Fraction(c))

    def _split8_impl(x, j0, m, zs, k1, k2, k3, mk, gelu):
        ks = [k1, k2, k3]
        bits = [0, 0]
        vals = ([], [], [])
        for lane in range(_LANES):
            j = j0 + lane
            if j >= m:
                break
            z = x[j] / SQRT2 if gelu else x[j]
            a = abs(z)
            c = 0 if a < _ERF_SMALL else (1 if a < _ERFC_START else 2)
            vals[c].append(z)
            if c < 2:
                bits[c] |= 1 << lane
        for c in range(3):
            seg = vals[c] + [0.0] * (_LANES - len(vals[c]))
            zs[ks[c] : ks[c] + _LANES] = seg
            ks[c] += len(vals[c])
        mk[2 * (j0 // _LANES)] = bits[0]
        mk[2 * (j0 // _LANES) + 1] = bits[1]
        return ks[0], ks[1], ks[2]

    def _merge8_impl(x, j0, m, zs, k1, k2, k3, mk, out, gelu):
        ks = [k1, k2, k3]
        b1 = int(mk[2 * (j0 // _LANES)])
        b2 = int(mk[2 * (j0 // _LANES) + 1])
        for lane in range(_LANES):
            j = j0 + lane
            if j >= m:
                break
            c = 0 if (b1 >> lane) & 1 else (1 if (b2 >> lane) & 1 else 2)
            e = zs[ks[c]]
            ks[c] += 1
            out[j] = 0.5 * x[j] * (1.0 + e) if gelu else e
        return ks[0], ks[1], ks[2]

    def _split8_gelu(x, j0, m, zs, k1, k2, k3, mk):
        return _split8_impl(x, j0, m, zs, k1, k2, k3, mk, True)

    def _split8_erf(x, j0, m, zs, k1, k2, k3, mk):
        return _split8_impl(x, j0, m, zs, k1, k2, k3, mk, False)

    def _merge8_gelu(x, j0, m, zs, k1, k2, k3, mk, out):
        return _merge8_impl(x, j0, m, zs, k1, k2, k3, mk, out, True)

    def _merge8_erf(x, j0, m, zs, k1, k2, k3, mk, out):
        return _merge8_impl(x, j0, m, zs, k1, k2, k3, mk, out, False)

    def _gelu8(x, j0, m, zb, ib, k3, out):
        for j in range(j0, min(j0 + _LANES, m)):
            z = x[j] / SQRT2
            a = abs(z)
            if a < _ERFC_START:
                e = _erf_small1(z) if a < _ERF_SMALL else _erf_mid1(z)
                out[j] = 0.5 * x[j] * (1.0 + e)
            else:
                zb[k3] = z
                ib[k3] = j
                k3 += 1
        return k3

else:
    _f64 = ir.DoubleType()
    _i64 = ir.IntType(64)
    _i32 = ir.IntType(32)
    _i8 = ir.IntType(8)
    _v8d = ir.VectorType(_f64, _LANES)
    _v8i = ir.VectorType(_i64, _LANES)
    _v8b = ir.VectorType(ir.IntType(1), _LANES)


    def _splat(v):
        return ir.Constant(_v8d, [v] * _LANES)

    def _broadcast(builder, val):
        """An ``<8 x i64>`` with ``val`` in every lane."""
        return splat(builder, val, _v8i)

    def _valid_mask(builder, j0, m):
        """Lanes ``j0 + i < m``."""
        jv = builder.add(_broadcast(builder, j0), ir.Constant(_v8i, list(range(_LANES))))
        return builder.icmp_signed("<", jv, _broadcast(builder, m))

    def _load8(builder, ptr, j0, valid):
        fn = declare(builder, "llvm.masked.load.v8f64.p0", _v8d, [_f64.as_pointer(), _i32, _v8b, _v8d])
        return builder.call(fn, [builder.gep(ptr, [j0]), ir.Constant(_i32, 8), valid, _splat(0.0)])

    def _store8(builder, val, ptr, j0, valid):
        fn = declare(builder, "llvm.masked.store.v8f64.p0", ir.VoidType(), [_v8d, _f64.as_pointer(), _i32, _v8b])
        builder.call(fn, [val, builder.gep(ptr, [j0]), ir.Constant(_i32, 8), valid])

    def _popcount(builder, mask):
        fn = declare(builder, "llvm.ctpop.i8", _i8, [_i8])
        return builder.zext(builder.call(fn, [builder.bitcast(mask, _i8)]), _i64)

    def _data(context, builder, aty, aval):
        return context.make_array(aty)(context, builder, aval).data

    def _div_sqrt2(builder, x):
        """``x / SQRT2`` rounded once, as a divide gives it, in three vector operations instead of a divide.

        ``q0 = x * RSQRT2`` (``RSQRT2 = 1 / SQRT2`` rounded to nearest) is within an ulp of the quotient, the
        remainder ``x - q0 * SQRT2`` is exact as one fused multiply-add, and ``q0 + rem * RSQRT2``, rounded once,
        is the correctly rounded quotient (Markstein's theorem; J.-M. Muller et al., *Handbook of
        Floating-Point Arithmetic*, 2nd ed., theorem 4.10), so long as the remainder does not underflow:
        ``|x| >= 2**-960``. Below that, GELU's ``1 + erf(z)`` is 1 whatever the last bit of ``z``. For
        ``x = +-inf`` the remainder is NaN and ``q0`` (``+-inf``) is kept; NaN stays NaN. The divide it
        replaces was half the time of GELU's split and merge passes (an AVX-512 ``vdivpd`` takes ~16 cycles
        per 8 lanes).
        """
        fma8 = declare(builder, "llvm.fma.v8f64", _v8d, [_v8d, _v8d, _v8d])
        q0 = builder.fmul(x, _splat(_RSQRT2))
        rem = builder.call(fma8, [builder.fneg(q0), _splat(SQRT2), x])
        q = builder.call(fma8, [rem, _splat(_RSQRT2), q0])
        return builder.select(builder.fcmp_unordered("uno", rem, rem), q0, q)

    def _make_split8(gelu):
        def _split8(typingctx, x, j0, m, zs, k1, k2, k3, mk):
            sig = types.UniTuple(types.int64, 3)(x, j0, m, zs, k1, k2, k3, mk)

            def codegen(context, builder, signature, args):
                x_, j0_, m_, zs_, k1_, k2_, k3_, mk_ = args
                xp = _data(context, builder, signature.args[0], x_)
                zp = _data(context, builder, signature.args[3], zs_)
                mp = _data(context, builder, signature.args[7], mk_)
                valid = _valid_mask(builder, j0_, m_)
                z = _load8(builder, xp, j0_, valid)
                if gelu:  # x / SQRT2, correctly rounded without a divide (see _div_sqrt2)
                    z = _div_sqrt2(builder, z)
                a = builder.call(declare(builder, "llvm.fabs.v8f64", _v8d, [_v8d]), [z])
                c1 = builder.fcmp_ordered("<", a, _splat(_ERF_SMALL))
                c12 = builder.fcmp_ordered("<", a, _splat(_ERFC_START))  # false for NaN: range 3
                ones = ir.Constant(_v8b, [1] * _LANES)
                m1 = builder.and_(c1, valid)
                m2 = builder.and_(builder.and_(c12, builder.xor(c1, ones)), valid)
                m3 = builder.and_(builder.xor(c12, ones), valid)
                compress = declare(builder, "llvm.experimental.vector.compress.v8f64", _v8d, [_v8d, _v8b, _v8d])
                ks = []
                for mask, k in ((m1, k1_), (m2, k2_), (m3, k3_)):
                    packed = builder.call(compress, [z, mask, _splat(0.0)])
                    builder.store(packed, builder.bitcast(builder.gep(zp, [k]), _v8d.as_pointer()), align=8)
                    ks.append(builder.add(k, _popcount(builder, mask)))
                g = builder.shl(builder.ashr(j0_, ir.Constant(_i64, 3)), ir.Constant(_i64, 1))  # 2 * (j0 // 8)
                builder.store(builder.bitcast(m1, _i8), builder.gep(mp, [g]))
                builder.store(builder.bitcast(m2, _i8), builder.gep(mp, [builder.add(g, ir.Constant(_i64, 1))]))
                return context.make_tuple(builder, signature.return_type, ks)

            return sig, codegen

        return intrinsic(_split8)

    def _make_merge8(gelu):
        def _merge8(typingctx, x, j0, m, zs, k1, k2, k3, mk, out):
            sig = types.UniTuple(types.int64, 3)(x, j0, m, zs, k1, k2, k3, mk, out)

            def codegen(context, builder, signature, args):
                x_, j0_, m_, zs_, k1_, k2_, k3_, mk_, out_ = args
                xp = _data(context, builder, signature.args[0], x_)
                zp = _data(context, builder, signature.args[3], zs_)
                mp = _data(context, builder, signature.args[7], mk_)
                op = _data(context, builder, signature.args[8], out_)
                valid = _valid_mask(builder, j0_, m_)
                g = builder.shl(builder.ashr(j0_, ir.Constant(_i64, 3)), ir.Constant(_i64, 1))
                m1 = builder.bitcast(builder.load(builder.gep(mp, [g])), _v8b)
                m2 = builder.bitcast(builder.load(builder.gep(mp, [builder.add(g, ir.Constant(_i64, 1))])), _v8b)
                m3 = builder.and_(builder.xor(builder.or_(m1, m2), ir.Constant(_v8b, [1] * _LANES)), valid)
                expand = declare(builder, "llvm.masked.expandload.v8f64", _v8d, [_f64.as_pointer(), _v8b, _v8d])
                e = _splat(0.0)
                ks = []
                for mask, k in ((m1, k1_), (m2, k2_), (m3, k3_)):
                    e = builder.call(expand, [builder.gep(zp, [k]), mask, e])
                    ks.append(builder.add(k, _popcount(builder, mask)))
                if gelu:  # 0.5 * x * (1.0 + e), in that order
                    xv = _load8(builder, xp, j0_, valid)
                    e = builder.fmul(builder.fmul(_splat(0.5), xv), builder.fadd(_splat(1.0), e))
                _store8(builder, e, op, j0_, valid)
                return context.make_tuple(builder, signature.return_type, ks)

            return sig, codegen

        return intrinsic(_merge8)

    def _horner_fma(builder, coeffs, v):
        """``c[n]`` Horner steps ``p = p * v + c[k]`` as fused multiply-adds (how ``contract`` compiles the scalar code)."""
        fma8 = declare(builder, "llvm.fma.v8f64", _v8d, [_v8d, _v8d, _v8d])
        p = _splat(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            p = builder.call(fma8, [p, v, _splat(c)])
        return p

    @intrinsic
    def _gelu8(typingctx, x, j0, m, zb, ib, k3, out):
        """GELU for lanes ``j0 .. min(j0 + 8, m) - 1``, where ``|z| < 1.25``; the others listed for the erfc range.

        ``z = x / SQRT2``; ranges 1 and 2 of erf are both evaluated in every lane (the same operations as
        :func:`_erf_small1` and :func:`_erf_mid1`) and selected, and ``0.5 * x * (1 + e)`` is stored in the
        lanes with ``|z| < 1.25``. Lanes with ``|z| >= 1.25`` (and NaN) are left unwritten (an in-place ``x``
        keeps them); their ``z`` and index are compressed onto the ends of ``zb`` and ``ib`` (at ``k3``).
        Returns the new list length.
        """
        sig = types.int64(x, j0, m, zb, ib, k3, out)

        def codegen(context, builder, signature, args):
            x_, j0_, m_, zb_, ib_, k3_, out_ = args
            xp = _data(context, builder, signature.args[0], x_)
            zp = _data(context, builder, signature.args[3], zb_)
            ip = _data(context, builder, signature.args[4], ib_)
            op = _data(context, builder, signature.args[6], out_)
            valid = _valid_mask(builder, j0_, m_)
            xv = _load8(builder, xp, j0_, valid)
            z = _div_sqrt2(builder, xv)
            fma8 = declare(builder, "llvm.fma.v8f64", _v8d, [_v8d, _v8d, _v8d])
            a = builder.call(declare(builder, "llvm.fabs.v8f64", _v8d, [_v8d]), [z])
            small = builder.call(fma8, [z, _horner_fma(builder, _ERF_COEFFS, builder.fmul(z, z)), z])
            mid = builder.fadd(_splat(_ERF_MID_C), _horner_fma(builder, _ERF_MID_COEFFS, builder.fsub(a, _splat(_ERF_MID))))
            mid = builder.select(builder.fcmp_ordered(">", z, _splat(0.0)), mid, builder.fneg(mid))
            e = builder.select(builder.fcmp_ordered("<", a, _splat(_ERF_SMALL)), small, mid)
            res = builder.fmul(builder.fmul(_splat(0.5), xv), builder.fadd(_splat(1.0), e))
            near = builder.fcmp_ordered("<", a, _splat(_ERFC_START))  # false for NaN: listed
            _store8(builder, res, op, j0_, builder.and_(near, valid))
            far = builder.and_(builder.xor(near, ir.Constant(_v8b, [1] * _LANES)), valid)
            compress = declare(builder, "llvm.experimental.vector.compress.v8f64", _v8d, [_v8d, _v8b, _v8d])
            builder.store(builder.call(compress, [z, far, _splat(0.0)]),
                          builder.bitcast(builder.gep(zp, [k3_]), _v8d.as_pointer()), align=8)
            lanes = builder.add(_broadcast(builder, j0_), ir.Constant(_v8i, list(range(_LANES))))
            compress_i = declare(builder, "llvm.experimental.vector.compress.v8i64", _v8i, [_v8i, _v8b, _v8i])
            builder.store(builder.call(compress_i, [lanes, far, ir.Constant(_v8i, [0] * _LANES)]),
                          builder.bitcast(builder.gep(ip, [k3_]), _v8i.as_pointer()), align=8)
            return builder.add(k3_, _popcount(builder, far))

        return sig, codegen

    _split8_gelu = _make_split8(True)
    _split8_erf = _make_split8(False)
    _merge8_gelu = _make_merge8(True)
    _merge8_erf = _make_merge8(False)

    @intrinsic
    def _f2i(typingctx, x):
        """Bits of a float64 as int64 (vectorises: a no-op bitcast)."""

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _i64)

        return types.int64(types.float64), codegen

    @intrinsic
    def _i2f(typingctx, i):
        """float64 with the bits of an int64."""

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _f64)

        return types.float64(types.int64), codegen

    @intrinsic
    def fma(typingctx, a, b, c):
        """``a * b + c`` with a single rounding (``llvm.fma``: one instruction where the CPU has FMA)."""
        sig = types.float64(types.float64, types.float64, types.float64)

        def codegen(context, builder, signature, args):
            fn = declare(builder, "llvm.fma.f64", _f64, [_f64, _f64, _f64])
            return builder.call(fn, args)

        return sig, codegen


@njit(inline="always", **_JIT)
def _erf_mid1(xi):
    """Range 2: ``+-(C + m(|x| - _ERF_MID))`` (as in :func:`_erf_reduce`)."""
    mid = _erf_mid_poly(abs(xi) - _ERF_MID)
    return mid if xi > 0.0 else -mid


@njit(inline="always", **_JIT)
def _erf_big1(xi):
    """Range 3 (and NaN): ``sign(x) (1 - erfc(|x|))``.

    The same operations as :func:`_erf_reduce` (its ``big`` lane), :func:`_exp_block` and :func:`_erf_finish`,
    in one go. The exponent ``R(y) - a^2`` lies in ``[-35, -1]`` here, so ``exp``'s clamps and NaN case
    never apply and ``2**k`` is normal: ``p * 2**k`` is the same exact product as ``(p * 2**k1) * 2**k2``.
    """
    a = abs(xi)
    a3 = a if a > _ERFC_START else _ERFC_START  # NaN -> _ERFC_START (finite exponent)
    a3 = a3 if a3 < _ERF_SAT else _ERF_SAT
    v, r = _erfc_poly(a3)
    w = r - a3 * a3
    # exp(w), as _exp_reduce / _exp_scale_bits / _exp_finish compute it
    t = w * _LOG2E + _SHIFTER
    kf = t - _SHIFTER
    rr = (w - kf * _LN2_HI) - kf * _LN2_LO
    p = _exp_poly(rr)
    ew = p * _i2f((_f2i(t) - _SHIFTER_BITS + 1023) << 52)
    # finish, as _erf_finish on q = +-2v (NaN: q = xi)
    q = v + v
    q = q if xi > 0.0 else -q
    q = q if xi == xi else xi
    sgn = 1.0 if q > 0.0 else -1.0
    return sgn - (0.125 * q) * ew


@njit(**_JIT)
def _erf_small(lo, hi):
    """Range 1 in place on two halves of its list (two independent chains per iteration)."""
    for k in range(lo.shape[0]):
        lo[k] = _erf_small1(lo[k])
        hi[k] = _erf_small1(hi[k])


@njit(**_JIT)
def _erf_mid(lo, hi):
    """Range 2 in place on two halves of its list."""
    for k in range(lo.shape[0]):
        lo[k] = _erf_mid1(lo[k])
        hi[k] = _erf_mid1(hi[k])


@njit(**_JIT)
def _erf_big(lo, hi):
    """Range 3 in place on two halves of its list."""
    for k in range(lo.shape[0]):
        lo[k] = _erf_big1(lo[k])
        hi[k] = _erf_big1(hi[k])


@njit(**_JIT)
def _erf_lists(zs, cap, n1, n2, n3):
    """Ranges 1, 2, 3 on the lists ``zs[0:n1]``, ``zs[cap:cap+n2]``, ``zs[2cap:2cap+n3]``, in place.

    Each list is processed over its length rounded up to 16, as two halves of a multiple of 8; lanes past
    the list's end hold zeros or earlier results (finite; their results are not used).
    """
    h = _up8((n1 + 1) // 2)
    _erf_small(zs[0:h], zs[h : 2 * h])
    h = _up8((n2 + 1) // 2)
    _erf_mid(zs[cap : cap + h], zs[cap + h : cap + 2 * h])
    h = _up8((n3 + 1) // 2)
    _erf_big(zs[2 * cap : 2 * cap + h], zs[2 * cap + h : 2 * cap + 2 * h])


@njit(**_JIT)
def _split_scratch(n):
    """The three lists (``cap`` elements each: a block rounded up to 16, plus 8) and the mask bytes."""
    bs = _up8(min(n, BLOCK))
    cap = bs + 2 * _LANES
    return np.zeros(3 * cap, dtype=np.float64), cap, np.zeros(bs // 4 + 2, dtype=np.uint8)


@njit(**_JIT)
def _contiguous(a, s0, m, buf):
    """``a[s0:s0+m]`` if it has unit stride, else a copy of it in ``buf[:m]``."""
    v = a[s0 : s0 + m]
    if v.strides[0] == 8:
        return v
    for j in range(m):
        buf[j] = v[j]
    return buf[:m]


# --------------------------------------------------------------------------- public API


@njit(**_JIT)
def exp_into(x, out):
    """``out[:] = exp(x)`` for 1-D float64 arrays (``out`` may be ``x``); returns ``out``."""
    n = _check(x, out)
    pb, _, _, tb, ub, ti, ui = _scratch(n)
    for s0 in range(0, n, BLOCK):
        m = min(BLOCK, n - s0)
        _exp_block(x[s0 : s0 + m], out[s0 : s0 + m], pb, tb, ub, ti, ui)
    return out


@njit(**_JIT)
def sigmoid_into(x, out):
    """``out[:] = 1 / (1 + exp(-x))`` for 1-D float64 arrays (``out`` may be ``x``); returns ``out``."""
    n = _check(x, out)
    pb, xb, eb, tb, ub, ti, ui = _scratch(n)
    for s0 in range(0, n, BLOCK):
        m = min(BLOCK, n - s0)
        xs = x[s0 : s0 + m]
        os = out[s0 : s0 + m]
        for j in range(m):
            xi = xs[j]
            xb[j] = xi
            eb[j] = -abs(xi)
        _exp_block(eb[:m], eb[:m], pb, tb, ub, ti, ui)
        for j in range(m):
            e = eb[j]  # exp(-|x|) in [0, 1]
            pos = xb[j] >= 0.0
            hi = 1.0 + e
            lo = (1.0 - hi) + e  # Fast2Sum: hi + lo == 1 + e exactly
            s = (1.0 if pos else e) / hi
            inv = s if pos else 1.0 - s  # ~ 1 / (1 + e), only needed to ~1e-16
            os[j] = s - s * (lo * inv)  # num / (hi + lo) to first order in lo / hi
    return out


@njit(**_JIT)
def tanh_into(x, out):
    """``out[:] = tanh(x)`` for 1-D float64 arrays (``out`` may be ``x``); returns ``out``."""
    n = _check(x, out)
    pb, xb, eb, tb, ub, ti, ui = _scratch(n)
    for s0 in range(0, n, BLOCK):
        m = min(BLOCK, n - s0)
        xs = x[s0 : s0 + m]
        os = out[s0 : s0 + m]
        for j in range(m):
            xi = xs[j]
            xb[j] = xi
            eb[j] = 2.0 * abs(xi)
        _exp_block(eb[:m], eb[:m], pb, tb, ub, ti, ui)
        for j in range(m):
            xi = xb[j]
            e = eb[j]  # exp(2|x|) in [1, inf]
            big = 1.0 - 2.0 / (e + 1.0)
            big = big if xi > 0.0 else -big
            t = xi * xi
            g = _T10
            g = g * t + _T9
            g = g * t + _T8
            g = g * t + _T7
            g = g * t + _T6
            g = g * t + _T5
            g = g * t + _T4
            g = g * t + _T3
            g = g * t + _T2
            g = g * t + _T1
            g = g * t + _T0
            small = xi + xi * (t * g) if xi != 0.0 else xi  # keeps tanh(-0.0) = -0.0
            os[j] = small if abs(xi) < _TANH_SMALL else big
    return out


@njit(**_JIT)
def _lists_block(xs, os, m, zs, cap, mk, gelu):
    """One block of erf (or GELU) through per-range lists: split, each range on its list, merge.

    Returns how many elements were in range 3 (``|z| >= 1.25`` or NaN).
    """
    k1, k2, k3 = 0, cap, 2 * cap
    for j0 in range(0, m, _LANES):
        if gelu:
            k1, k2, k3 = _split8_gelu(xs, j0, m, zs, k1, k2, k3, mk)
        else:
            k1, k2, k3 = _split8_erf(xs, j0, m, zs, k1, k2, k3, mk)
    n3 = k3 - 2 * cap
    _erf_lists(zs, cap, k1, k2 - cap, n3)
    k1, k2, k3 = 0, cap, 2 * cap
    for j0 in range(0, m, _LANES):
        if gelu:
            k1, k2, k3 = _merge8_gelu(xs, j0, m, zs, k1, k2, k3, mk, os)
        else:
            k1, k2, k3 = _merge8_erf(xs, j0, m, zs, k1, k2, k3, mk, os)
    return n3


@njit(**_JIT)
def _near_block(xs, os, m, zb, ib):
    """One block of GELU: ranges 1 and 2 in every lane (:func:`_gelu8`), then the listed range-3 lanes.

    Returns how many elements were in range 3.
    """
    k3 = 0
    for j0 in range(0, m, _LANES):
        k3 = _gelu8(xs, j0, m, zb, ib, k3, os)
    for k in range(k3):
        zb[k] = _erf_big1(zb[k])
    for k in range(k3):
        j = ib[k]
        os[j] = 0.5 * xs[j] * (1.0 + zb[k])
    return k3


#: A GELU block goes through the per-range lists when more than this share of the previous block was in
#: range 3 (:func:`_by_range_into`): there the lists are faster than evaluating ranges 1 and 2 in every lane
#: (one core, normal arguments: equal near sigma = 1.6, where 27 % are in range 3).
FAR_SHARE_FOR_LISTS = 0.25


@njit(**_JIT)
def _by_range_into(x, out, gelu, near):
    """erf (or, with ``gelu``, GELU) block by block, each element through one range's polynomial.

    A block goes through the per-range lists (:func:`_lists_block`), or with ``near`` (GELU only), while few
    arguments reach range 3, through the 8-lane pass that evaluates ranges 1 and 2 in every lane and lists
    only the rest (:func:`_near_block`); more than :data:`FAR_SHARE_FOR_LISTS` of a block in range 3 sends
    the next block to the lists. Both give the same values, bit for bit.
    """
    n = _check(x, out)
    bs = min(n, BLOCK)
    zs, cap, mk = _split_scratch(n)
    zb = np.zeros(_up8(bs) + _LANES if near else 0)
    ib = np.zeros(_up8(bs) + _LANES if near else 0, dtype=np.int64)
    xbuf = np.empty(bs if x.strides[0] != 8 else 0, dtype=np.float64)
    obuf = np.empty(bs if out.strides[0] != 8 else 0, dtype=np.float64)
    lists = not near
    for s0 in range(0, n, BLOCK):
        m = min(BLOCK, n - s0)
        xs = _contiguous(x, s0, m, xbuf)
        os = out[s0 : s0 + m] if obuf.shape[0] == 0 else obuf[:m]
        if lists:
            far = _lists_block(xs, os, m, zs, cap, mk, gelu)
        else:
            far = _near_block(xs, os, m, zb, ib)
        lists = not near or far > FAR_SHARE_FOR_LISTS * m
        if obuf.shape[0] != 0:
            out[s0 : s0 + m] = os
    return out


@njit(**_JIT)
def erf_into(x, out):
    """``out[:] = erf(x)`` for 1-D float64 arrays (``out`` may be ``x``); returns ``out``."""
    return _by_range_into(x, out, False, False)


@njit(**_JIT)
def gelu_into(x, out):
    """``out[:] = 0.5 * x * (1 + erf(x / SQRT2))`` for 1-D float64 arrays (``out`` may be ``x``); returns ``out``.

    Mostly through the 8-lane pass over ranges 1 and 2 (2-9 % of a spiking encoder's currents reach range 3),
    the per-range lists where range 3 is common (:func:`_by_range_into`); the same values, bit for bit, as
    the all-ranges reference.
    """
    return _by_range_into(x, out, True, True)


# All three erf ranges evaluated for every element and selected: the original formulation, kept as the
# reference that the tests compare the fast path with, bit for bit.


@njit(**_JIT)
def _erf_reference_into(x, out):
    """:func:`erf_into` through the all-ranges passes (:func:`_erf_reduce`, :func:`_erf_finish`)."""
    n = _check(x, out)
    pb, qb, eb, tb, ub, ti, ui = _scratch(n)
    for s0 in range(0, n, BLOCK):
        m = min(BLOCK, n - s0)
        _erf_core(x[s0 : s0 + m], qb, eb, pb, tb, ub, ti, ui)
        _erf_finish(qb, eb, out[s0 : s0 + m])
    return out


@njit(**_JIT)
def _gelu_reference_into(x, out):
    """:func:`gelu_into` through the all-ranges passes (:func:`_erf_reduce`, :func:`_gelu_finish`)."""
    n = _check(x, out)
    pb, qb, eb, tb, ub, ti, ui, vb = _scratch6(n)
    for s0 in range(0, n, BLOCK):
        m = min(BLOCK, n - s0)
        xs = x[s0 : s0 + m]
        zb = pb[:m]  # exp's scratch row, free until _erf_core's exp pass
        for j in range(m):
            v = xs[j]
            vb[j] = v
            zb[j] = v / SQRT2
        _erf_core(zb, qb, eb, pb, tb, ub, ti, ui)
        _gelu_finish(vb, qb, eb, out[s0 : s0 + m])
    return out


# --------------------------------------------------------------------------- provenance


def fit_coefficients(which: str, degree: int | None = None, dps: int = 60) -> list[float]:
    """Re-derive the polynomial coefficients above (needs ``mpmath``; not used at run time).

    Interpolates, at the ``degree + 1`` Chebyshev nodes and in ``dps``-digit
    arithmetic, ``(e^r - 1 - r) / r^2`` on ``|r| <= 1.01 ln2/2`` (``which="exp"``),
    ``(tanh(x) - x) / x^3`` as a function of ``t = x^2`` on ``[0, 0.55^2]``
    (``which="tanh"``), ``erf(x) / x - 1`` as a function of ``t = x^2`` on
    ``[0, 0.6875^2]`` (``which="erf"``), ``erf(0.96875 + s) - _ERF_MID_C`` on
    ``s in [0.6875, 1.25] - 0.96875`` (``which="erf_mid"``) or
    ``log((2 + a) erfc(a)) + a^2`` as a function of ``y = 4 / (2 + a) - 0.875``
    for ``a in [1.25, 6]`` (``which="erfc"``), and returns the monomial
    coefficients rounded to float64, lowest order first. ``degree`` defaults to
    the one used above (10, 10, 10, 14, 16). Chebyshev interpolation is within a
    small factor of the minimax polynomial (Trefethen, *Approximation Theory and
    Approximation Practice*, ch. 16).
    """
    import mpmath as mp

    if degree is None:
        degree = {"erf_mid": 14, "erfc": 16}.get(which, 10)
    with mp.workdps(dps):
        tiny = mp.mpf(10) ** (-(dps // 2))
        if which == "exp":
            half = mp.log(2) / 2 * mp.mpf("1.01")
            a, b = -half, half

            def f(r):
                return mp.mpf(1) / 2 + r / 6 if abs(r) < tiny else (mp.exp(r) - 1 - r) / r**2

        elif which == "tanh":
            a, b = mp.mpf(0), mp.mpf(_TANH_SMALL) ** 2

            def f(t):
                if abs(t) < tiny:
                    return -mp.mpf(1) / 3 + 2 * t / 15
                s = mp.sqrt(t)
                return (mp.tanh(s) - s) / s**3

        elif which == "erf":
            a, b = mp.mpf(0), mp.mpf(_ERF_SMALL) ** 2

            def f(t):
                c = 2 / mp.sqrt(mp.pi)
                if abs(t) < tiny:
                    return c - 1 - c * t / 3
                s = mp.sqrt(t)
                return mp.erf(s) / s - 1

        elif which == "erf_mid":
            a, b = mp.mpf(_ERF_SMALL) - _ERF_MID, mp.mpf(_ERFC_START) - _ERF_MID

            def f(s):
                return mp.erf(_ERF_MID + s) - _ERF_MID_C

        elif which == "erfc":
            a = 4 / (2 + mp.mpf(_ERF_SAT)) - _ERFC_CENTER
            b = 4 / (2 + mp.mpf(_ERFC_START)) - _ERFC_CENTER

            def f(y):
                z = 4 / (y + _ERFC_CENTER) - 2
                return mp.log((2 + z) * mp.erfc(z)) + z * z

        else:
            raise ValueError(f"unknown function {which!r}")
        n = degree + 1
        nodes = [(a + b) / 2 + (b - a) / 2 * mp.cos(mp.pi * (2 * k + 1) / (2 * n)) for k in range(n)]
        c = mp.lu_solve(mp.matrix([[t**j for j in range(n)] for t in nodes]), mp.matrix([f(t) for t in nodes]))
        return [float(c[j]) for j in range(n)]
