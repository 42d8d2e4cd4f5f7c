"""ns per element of eventsim.vmath kernels vs Numba loops over scalar libm calls.

Usage: ``python benchmarks/bench_vmath.py [--n 10000] [--repeat 2000]``.
Each timing is the best of ``--rounds`` medians of ``--repeat`` back-to-back calls
on the same ``--n``-element arrays (uniform in [-10, 10]), all measured in this run.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from numba import njit

from eventsim.vmath import exp_into, sigmoid_into, tanh_into


@njit(cache=True)
def libm_exp_into(x, out):
    for i in range(x.shape[0]):
        out[i] = math.exp(x[i])
    return out


@njit(cache=True)
def libm_sigmoid_into(x, out):
    for i in range(x.shape[0]):
        out[i] = 1.0 / (1.0 + math.exp(-x[i]))
    return out


@njit(cache=True)
def libm_tanh_into(x, out):
    for i in range(x.shape[0]):
        out[i] = math.tanh(x[i])
    return out


def ns_per_element(f, x, out, repeat: int, rounds: int) -> float:
    f(x, out)  # compile / load from cache
    best = math.inf
    for _ in range(rounds):
        times = np.empty(repeat)
        for r in range(repeat):
            t0 = time.perf_counter_ns()
            f(x, out)
            times[r] = time.perf_counter_ns() - t0
        best = min(best, float(np.median(times)))
    return best / x.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(-10.0, 10.0, args.n)
    out = np.empty_like(x)
    pairs = [
        ("exp", exp_into, libm_exp_into),
        ("sigmoid", sigmoid_into, libm_sigmoid_into),
        ("tanh", tanh_into, libm_tanh_into),
    ]
    print(f"n = {args.n}, median of {args.repeat} calls, best of {args.rounds} rounds")
    print(f"{'function':<10}{'vmath ns/el':>14}{'libm loop ns/el':>18}{'speed-up':>11}")
    for name, fast, slow in pairs:
        t_fast = ns_per_element(fast, x, out, args.repeat, args.rounds)
        t_slow = ns_per_element(slow, x, out, args.repeat, args.rounds)
        print(f"{name:<10}{t_fast:>14.3f}{t_slow:>18.3f}{t_slow / t_fast:>10.2f}x")


if __name__ == "__main__":
    main()
