"""Price an event trace on a chip: one call from trace to :class:`hw.report.ChipReport`."""

from __future__ import annotations

import numpy as np

from eventsim.errors import EventsimError
from eventsim.trace import EventTrace
from hw.chip import Chip, load_chip
from hw.energy import dynamic_energy_pj, static_energy_pj, static_power_w
from hw.mapping import MappingReport
from hw.report import ChipReport
from hw.timing_analytic import analytic_timing
from hw.timing_simpy import simpy_timing
from hw.workload import DEFAULT_PACKET_TRAINS, build_workload

TIMINGS = {"analytic": analytic_timing, "simpy": simpy_timing}


def evaluate(
    trace: EventTrace,
    chip: Chip | str,
    mapping: MappingReport | None = None,
    timing: str = "analytic",
    packet_trains: int = DEFAULT_PACKET_TRAINS,
) -> ChipReport:
    """Latency, energy, packets and hops of every step of ``trace`` on ``chip``.

    ``mapping`` (from :func:`hw.mapping.map_model`) says where each PE sits and how
    its weights are stored; without it PEs fill the mesh in order and weights count
    as CSR. ``timing`` is ``"analytic"`` (no link contention, fast) or ``"simpy"``
    (every router and link simulated, contention included); ``packet_trains`` is how
    many trains a PE's events of one step are sent in (see :mod:`hw.workload`).
    """
    chip = load_chip(chip) if isinstance(chip, str) else chip
    if timing not in TIMINGS:
        raise EventsimError(f"unknown timing {timing!r}: choose {' or '.join(TIMINGS)}")
    routers = None
    if mapping is not None:
        if dict(mapping.placement.bounds) != dict(trace.placement.bounds):
            raise EventsimError("the trace was run with a different placement than the mapping given")
        routers = mapping.pe_router
    w = build_workload(trace, chip, routers, packet_trains)
    schedule = TIMINGS[timing](w)
    dynamic = dynamic_energy_pj(w, mapping.storage if mapping is not None else None)
    pes_used = trace.pe_count
    energy = {part: e.sum(axis=1) for part, e in dynamic.items()}
    energy["static"] = static_energy_pj(chip, pes_used, schedule.latency_ns)
    emitted = trace.events_emitted.astype(np.int64)
    fanout = np.asarray(trace.routes, dtype=np.int64).sum(axis=1)
    return ChipReport(
        chip=chip,
        timing=timing,
        packet_trains=packet_trains,
        pes_used=pes_used,
        static_power_w=static_power_w(chip, pes_used),
        latency_ns=schedule.latency_ns,
        energy_pj=energy,
        packets=trace.packets_sent().sum(axis=1),
        deliveries=emitted @ fanout,
        hops=emitted @ w.tree_links,
        pe_busy_ns=w.busy_cycles * chip.pe.ns_per_cycle,
        pe_update_start_ns=schedule.update_start_ns,
        pe_end_ns=schedule.end_ns,
        pe_energy_pj=sum(dynamic.values()),
        link_waits=schedule.link_waits,
        mapping=mapping,
    )
