"""Analytic timing: the step model of :mod:`hw.workload` in closed form, without link contention.

Every link is taken to be free when a train reaches it, so a train's arrival at
a PE is :func:`hw.workload.arrival_ns`. Each PE's queue is then exact: a single
core serving received trains in arrival order finishes at

    max( t_ready + all_work,  max_k ( arrival_k + work of trains arriving at or after arrival_k ) )

where ``t_ready`` is when it can start (after the DRAM read, if any). PEs are
numbered in layer order and a PE only waits for earlier layers in the same step,
so one pass over the PEs per step suffices (:func:`schedule_steps`, a Numba
kernel). On a trace with no link contention this equals the SimPy path; with
contention it is a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from eventsim.errors import EventsimError
from hw.workload import Workload, arrival_ns


@dataclass
class Timing:
    """Per-step latency and per-PE schedule, relative to each step's start."""

    latency_ns: np.ndarray  # [steps]
    update_start_ns: np.ndarray  # [steps, pes]
    end_ns: np.ndarray  # [steps, pes]
    link_waits: list[dict] = field(default_factory=list)  # SimPy only: links where trains queued


@njit(cache=True)
def schedule_steps(
    src_ptr, src_idx, reuse_order, hops, packet_ns, router_ns,
    train_count, sizes, frac, per_event_ns, ready_ns, update_ns,
    start, release,
):
    """Fill ``start[t, q]`` (update start) and ``release[t, q, i]`` (train departures) for every step.

    ``src_idx[src_ptr[q]:src_ptr[q + 1]]`` are the PEs feeding q in the same step
    (all numbered below q); ``ready_ns[t, q]`` is when q can start with all its work
    (DRAM read plus every received event's work), the queue bound of the formula above.
    ``reuse_order[q]``: q has the same sources as q - 1 and sits on the same router,
    so its trains arrive in the same order.
    """
    T, P = start.shape
    K = sizes.shape[2]
    arrive = np.empty(P * K)  # arrival times, sorted
    size_after = np.empty(P * K)  # events arriving at or after each, in that order
    buf_ready = np.empty(P * K)
    buf_size = np.empty(P * K)
    for t in range(T):
        n = 0
        for q in range(P):
            finish = ready_ns[t, q]
            if not reuse_order[q]:
                # Build q's arrival list; a PE on the same router with the same sources shares it.
                n = 0
                for j in range(src_ptr[q], src_ptr[q + 1]):
                    s = src_idx[j]
                    h = hops[s, q]
                    for i in range(train_count[t, s]):
                        m = max(sizes[t, s, i], 1)
                        if h == 0:
                            buf_ready[n] = release[t, s, i] + router_ns
                        else:
                            buf_ready[n] = release[t, s, i] + (h + 1) * router_ns + (h + m - 1) * packet_ns[s]
                        buf_size[n] = sizes[t, s, i]
                        n += 1
                if n > 0:
                    order = np.argsort(buf_ready[:n], kind="mergesort")
                    after = 0.0
                    for k in range(n - 1, -1, -1):
                        after += buf_size[order[k]]
                        arrive[k] = buf_ready[order[k]]
                        size_after[k] = after
            # Single core serving trains in arrival order (per-event work of q for every train).
            w = per_event_ns[t, q]
            for k in range(n):
                finish = max(finish, arrive[k] + size_after[k] * w)
            start[t, q] = finish
            for i in range(train_count[t, q]):
                release[t, q, i] = finish + frac[t, q, i] * update_ns[t, q]


def analytic_timing(w: Workload) -> Timing:
    T, P, K = w.steps, w.pe_count, w.packet_trains
    if np.any(np.diff(w.population) < 0):
        raise EventsimError("the trace's PEs are not numbered in layer order")
    sizes = w.train_sizes()
    frac = np.nan_to_num(w.train_fraction())
    fwd = w.forward.T  # fwd[q, s]: s feeds q in the same step
    src_ptr = np.concatenate([[0], np.cumsum(fwd.sum(axis=1))]).astype(np.int64)
    src_idx = np.nonzero(fwd)[1].astype(np.int64)
    reuse = np.zeros(P, dtype=np.bool_)
    reuse[1:] = (w.routers[1:] == w.routers[:-1]) & (fwd[1:] == fwd[:-1]).all(axis=1)
    start = np.zeros((T, P))
    release = np.zeros((T, P, K))
    schedule_steps(
        src_ptr, src_idx, reuse, w.hops.astype(np.int64), w.packet_ns.astype(np.float64), float(w.chip.noc.router_latency_ns),
        w.train_count, sizes.astype(np.int64), frac, w.per_event_ns, w.dram_ns + w.accumulate_ns, w.update_ns,
        start, release,
    )
    end = start + w.update_ns
    latency = end.max(axis=1)
    # Packets for the next step (recurrent) must also be delivered before the step ends.
    late = np.asarray(w.trace.routes, dtype=bool) & ~w.forward
    if late.any():
        far = np.where(late, w.hops, -1).max(axis=1)  # farthest next-step consumer of each PE
        src = np.nonzero(far >= 0)[0]
        exists = np.arange(K)[None, None, :] < w.train_count[:, src, None]
        arr = arrival_ns(release[:, src, :], far[src][None, :, None], np.maximum(sizes[:, src, :], 1),
                         w.packet_ns[src][None, :, None], w.chip.noc.router_latency_ns)
        latency = np.maximum(latency, np.where(exists, arr, -np.inf).max(axis=(1, 2)))
    return Timing(latency_ns=latency, update_start_ns=start, end_ns=end)
