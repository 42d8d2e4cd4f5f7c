"""The encoder's inner loops against the simpler loops they replaced, measured in one run.

Each pair computes the same values (checked bit for bit before timing); the
time per operation is the best of ``--repeats`` runs, the two alternating:

- spike projection, ``[N positions] x [n_in -> ncols]`` dense float32 rows at a
  given spike rate: :func:`eventsim.row_tiles.add_rows` (a 64-column tile of
  accumulators in registers over each position's spike list) against the loop it
  replaced (input neuron by input neuron, every AC a load and a store of its
  float64 accumulator); and add_rows with every spike on the same row (rows in
  L1: the kernel's own speed, without the weight traffic);
- LIF step of ``N x F`` neurons: :func:`eventsim.lif_lanes.lif_lanes` against
  the scalar loop (membrane pass, ASR pass, spike list appended element by element);
- LayerNorm rows: the corrected reciprocal (``encoder_kernels.layernorm_rows``)
  against the divide;
- GELU: :func:`eventsim.vmath.gelu_into` (ranges 1 and 2 in every lane, range 3 listed, or the
  per-range lists where range 3 is common) against the per-range lists alone
  (``vmath._by_range_into``) and every range evaluated for every element
  (``vmath._gelu_reference_into``), on normal arguments of sigma 0.77 (the benchmark
  encoder's IL-2 currents at V_th x 1.5) and 2.0.

Usage::

    python benchmarks/bench_encoder_kernels.py [--repeats 30] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from numba import njit

from eventsim import vmath
from eventsim.encoder_kernels import _row_sq_dev, _row_sum, layernorm_rows
from eventsim.lif_lanes import lif_lanes
from eventsim.row_tiles import add_rows


# ---------------------------------------------------------------------------------- the loops replaced
@njit(cache=True)
def project_per_ac(w, pos_start, pos_list, out, n_in, ncols):
    """Input neuron by input neuron; every AC loads and stores its accumulator."""
    for j in range(n_in):
        row = w[j * ncols:(j + 1) * ncols]
        for k in range(pos_start[j], pos_start[j + 1]):
            a = out[pos_list[k]]
            for c in range(ncols):
                a[c] += row[c]


@njit(cache=True)
def project_tiles(w, ev_idx, ev_cnt, out, ncols):
    N = out.shape[0]
    flat = out.reshape(N * ncols)
    for n in range(N):
        add_rows(flat, n * ncols, w, 0, ev_idx[n], ev_cnt[n], ncols, ncols)


@njit(cache=True)
def lif_scalar(u, x, a, ev_idx, ev_cnt, gamma, v_th, fire):
    """Membrane pass to a byte mask, ASR pass, spike list appended element by element."""
    N, F = u.shape
    for n in range(N):
        un, xn, an, en = u[n], x[n], a[n], ev_idx[n]
        for c in range(F):
            uu = gamma * un[c] + xn[c]
            f = uu >= v_th
            fire[c] = f
            un[c] = uu - v_th if f else uu
        for c in range(F):
            an[c] = gamma * an[c] + (1.0 if fire[c] != 0 else 0.0)
        k = 0
        for c in range(F):
            en[k] = c
            k += fire[c]
        ev_cnt[n] = k


@njit(cache=True)
def lif_vector(u, x, a, ev_idx, ev_cnt, gamma, v_th):
    for n in range(u.shape[0]):
        ev_cnt[n] = lif_lanes(u[n], x[n], a[n], ev_idx[n], gamma, 0.0, v_th, False, False)


@njit(cache=True)
def layernorm_divide(x, weight, bias, eps):
    N, F = x.shape
    for n in range(N):
        r = x[n]
        mu = _row_sum(r) / F
        sd = math.sqrt(_row_sq_dev(r, mu) / F + eps)
        for c in range(F):
            r[c] = (r[c] - mu) / sd * weight[c] + bias[c]


# ---------------------------------------------------------------------------------- timing
def best_of(fns: dict, repeats: int, reset) -> dict:
    """Best seconds of each function, called alternately ``repeats`` times (``reset()`` before each call)."""
    best = {k: math.inf for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            reset()
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def spike_lists(rng, N: int, n_in: int, rate: float):
    s = rng.random((N, n_in)) < rate
    ev_idx = np.zeros((N, n_in), np.int32)
    for n in range(N):
        j = np.flatnonzero(s[n])
        ev_idx[n, :j.size] = j
    pos_start = np.zeros(n_in + 1, np.int64)
    pos_start[1:] = np.cumsum(s.sum(axis=0))
    pos_list = np.concatenate([np.flatnonzero(s[:, j]) for j in range(n_in)]).astype(np.int64)
    return s, ev_idx, s.sum(axis=1).astype(np.int64), pos_start, pos_list


def bench_projection(N, n_in, ncols, rate, repeats, rng):
    s, ev_idx, ev_cnt, pos_start, pos_list = spike_lists(rng, N, n_in, rate)
    w = rng.normal(0.0, 0.05, n_in * ncols).astype(np.float32)
    acs = int(s.sum()) * ncols
    out0 = rng.normal(size=(N, ncols))
    outs = {k: out0.copy() for k in ("per_ac", "tiles", "same_row")}
    same = np.zeros_like(ev_idx)
    fns = {"per_ac": lambda: project_per_ac(w, pos_start, pos_list, outs["per_ac"], n_in, ncols),
           "tiles": lambda: project_tiles(w, ev_idx, ev_cnt, outs["tiles"], ncols),
           "same_row": lambda: project_tiles(w, same, ev_cnt, outs["same_row"], ncols)}
    for fn in fns.values():
        fn()
    if not np.array_equal(outs["per_ac"], outs["tiles"]):
        raise SystemExit("spike projection: add_rows differs from the per-AC loop")

    def reset():
        for v in outs.values():
            v[:] = out0

    t = best_of(fns, repeats, reset)
    return {k: v / acs * 1e9 for k, v in t.items()}


def bench_lif(N, F, repeats, rng):
    x = rng.normal(0.15, 0.5, (N, F))
    u0 = rng.normal(0.0, 0.5, (N, F))
    st = {k: [u0.copy(), np.zeros((N, F)), np.zeros((N, F), np.int32), np.zeros(N, np.int64)] for k in ("s", "v")}
    fire = np.zeros(F, np.uint8)
    fns = {"scalar": lambda: lif_scalar(*st["s"][:1], x, *st["s"][1:], 1.0, 1.0, fire),
           "lanes": lambda: lif_vector(*st["v"][:1], x, *st["v"][1:], 1.0, 1.0)}

    def reset():
        for v in st.values():
            v[0][:] = u0
            v[1][:] = 0.0

    reset()
    for fn in fns.values():
        fn()
    if not (np.array_equal(st["s"][0], st["v"][0]) and np.array_equal(st["s"][3], st["v"][3])):
        raise SystemExit("LIF: lif_lanes differs from the scalar loop")
    t = best_of(fns, repeats, reset)
    return {k: v / (N * F) * 1e9 for k, v in t.items()}, float(st["v"][3].sum()) / (N * F)


def bench_layernorm(N, F, repeats, rng):
    x0 = rng.normal(size=(N, F)) + rng.normal(size=(N, 1))
    w, b = rng.normal(size=F), rng.normal(size=F)
    xs = {"divide": x0.copy(), "reciprocal": x0.copy()}
    runs, counts = np.array([[0, F, 0]], np.int64), np.zeros((13, 1), np.int64)
    fns = {"divide": lambda: layernorm_divide(xs["divide"], w, b, 1e-5),
           "reciprocal": lambda: layernorm_rows(xs["reciprocal"], w, b, 1e-5, runs, counts)}

    def reset():
        for v in xs.values():
            v[:] = x0

    reset()
    for fn in fns.values():
        fn()
    if not np.array_equal(xs["divide"], xs["reciprocal"]):
        raise SystemExit("LayerNorm: the corrected reciprocal differs from the divide")
    t = best_of(fns, repeats, reset)
    return {k: v / (N * F) * 1e9 for k, v in t.items()}


def bench_gelu(n, repeats, rng, sigma):
    x = rng.normal(0.0, sigma, n)
    out = {"all_ranges": np.empty(n), "per_range": np.empty(n), "gelu_into": np.empty(n)}
    fns = {"all_ranges": lambda: vmath._gelu_reference_into(x, out["all_ranges"]),
           "per_range": lambda: vmath._by_range_into(x, out["per_range"], True, False),
           "gelu_into": lambda: vmath.gelu_into(x, out["gelu_into"])}
    for fn in fns.values():
        fn()
    for key in ("per_range", "gelu_into"):
        if not np.array_equal(out["all_ranges"], out[key]):
            raise SystemExit(f"GELU: {key} differs from all ranges")
    t = best_of(fns, repeats, lambda: None)
    return {k: v / n * 1e9 for k, v in t.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (a smoke run)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    reps = 3 if args.quick else args.repeats
    N = 8 if args.quick else 32
    shapes = [(64, 128)] if args.quick else [(256, 1024), (1024, 256), (256, 256)]
    print("spike projection, ns per AC (per_ac: the loop replaced; tiles: add_rows; same_row: add_rows, rows in L1)")
    for n_in, ncols in shapes:
        for rate in (0.05, 0.14, 0.23):
            r = bench_projection(N, n_in, ncols, rate, reps, rng)
            print(f"  {N} x {n_in:>4} -> {ncols:<4} at {rate:4.0%}: per_ac {r['per_ac']:.3f}  tiles {r['tiles']:.3f}  "
                  f"same_row {r['same_row']:.3f}  per_ac / tiles {r['per_ac'] / r['tiles']:.2f}x")
    F = 128 if args.quick else 1024
    r, rate = bench_lif(N, F, reps, rng)
    print(f"LIF step ({N} x {F}, IF, {rate:.0%} spikes), ns per update: scalar {r['scalar']:.2f}  "
          f"lanes {r['lanes']:.2f}  ({r['scalar'] / r['lanes']:.2f}x)")
    for width in ((128,) if args.quick else (256, 1024)):
        r = bench_layernorm(N, width, reps, rng)
        print(f"LayerNorm ({N} x {width}), ns per element: divide {r['divide']:.2f}  reciprocal {r['reciprocal']:.2f}  "
              f"({r['divide'] / r['reciprocal']:.2f}x)")
    n = 4096 if args.quick else 1 << 18
    for sigma in (0.77, 2.0):
        r = bench_gelu(n, reps, rng, sigma)
        print(f"GELU ({n} elements, sigma {sigma}), ns per element: all ranges {r['all_ranges']:.2f}  "
              f"per-range lists {r['per_range']:.2f}  gelu_into {r['gelu_into']:.2f}  "
              f"({r['per_range'] / r['gelu_into']:.2f}x the lists)")


if __name__ == "__main__":
    main()
