"""SimPy timing: the step model of :mod:`hw.workload` as processes, with link contention.

- Every PE is a process per step: it reads DRAM if it must, waits until every
  train it expects in this step has arrived and its queue is served, updates,
  and releases its trains (spread over the update) into its router.
- Every router is a process: it wakes when train heads arrive, hands each train
  to the local PEs among its destinations (when its last packet is in, plus the
  router latency) and sends it on each outgoing link of the tree.
- Every router-to-router link (one direction) is a FIFO server with the link's
  bandwidth: a train of ``m`` packets holds it for ``m * packet_ns`` and its head
  reaches the next router ``packet_ns`` after the grant, where a SimPy event
  wakes that router. A train that finds the link busy waits; waits are recorded
  per link. A link is fed by one router, which handles trains in the order their
  heads arrive and requests the link a fixed ``router_latency_ns`` later, so
  requests reach each link in time order and the grant of a capacity-one FIFO
  resource is ``max(request time, link busy until)``: computed at request time
  rather than with a separate SimPy resource and process per link (three times
  fewer events, same schedule).

A PE's receive queue is served in arrival order with deterministic service
times, so its bookkeeping is done as each train arrives (``free_at``) rather than
with one timeout per train. Events travel in trains (``packet_trains`` in
:mod:`hw.workload`): one SimPy event per train per link and per router with
local destinations, not one per packet. With no link contention the result
equals the analytic path; contention only delays trains, so it is never earlier.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import simpy

from hw.timing_analytic import Timing
from hw.workload import Workload


class _Train:
    __slots__ = ("source", "nodes", "events", "packets", "packet_ns")

    def __init__(self, source, nodes, events, packets, packet_ns):
        self.source = source
        self.nodes = nodes  # router -> (has local destinations, local same-step consumers, ((port, next router), ...))
        self.events = events
        self.packets = packets
        self.packet_ns = packet_ns


class _Port:
    """One output link of a router (one direction of a router-to-router link): a FIFO server.

    Trains are offered in the order their heads reached the router, so the link
    is granted at ``max(ready, busy_until)``; a train holds it for ``m * packet_ns``.
    """

    __slots__ = ("busy_until", "wait_ns", "trains_waited", "max_wait_ns")

    def __init__(self):
        self.busy_until = 0.0
        self.wait_ns = 0.0
        self.trains_waited = 0
        self.max_wait_ns = 0.0

    def grant(self, ready: float, train: _Train) -> float:
        grant = max(ready, self.busy_until)
        if grant > ready:
            wait = grant - ready
            self.wait_ns += wait
            self.trains_waited += 1
            self.max_wait_ns = max(self.max_wait_ns, wait)
        self.busy_until = grant + train.packets * train.packet_ns
        return grant


class _Router:
    """A mesh router process: copies each train to local destinations and onto the tree's outgoing links.

    Its inbox is a FIFO of trains whose heads have arrived; the process wakes when
    the inbox fills and handles every train that arrived at that instant.
    """

    def __init__(self, sim: _Sim, rid: int):
        self.sim, self.id = sim, rid
        self.inbox: deque = deque()
        self.wake = None
        self.ports: dict[int, _Port] = {}
        sim.env.process(self.run())

    def put(self, item) -> None:
        self.inbox.append(item)
        if self.wake is not None:
            self.wake.succeed()
            self.wake = None

    def arrive(self, event) -> None:
        """A train's head has crossed a link into this router."""
        self.put(event.value)

    def run(self):
        sim = self.sim
        env, latency, inbox, rid = sim.env, sim.router_ns, self.inbox, self.id
        while True:
            if not inbox:
                self.wake = env.event()
                yield self.wake
            now = env.now
            while inbox:
                train, lag = inbox.popleft()
                has_local, consumers, ports = train.nodes[rid]
                if has_local:  # an event even for next-step consumers: the step ends when they have it
                    done = env.timeout(latency + lag, value=(train, consumers))
                    if consumers:
                        done.callbacks.append(sim.deliver)
                for port, nxt in ports:
                    grant = port.grant(now + latency, train)
                    head = env.timeout(grant + train.packet_ns - now,
                                       value=(train, (train.packets - 1) * train.packet_ns))
                    head.callbacks.append(nxt.arrive)


class _PEState:
    __slots__ = ("free_at", "pending", "all_in", "per_event_ns")


class _Sim:
    def __init__(self, w: Workload):
        self.w = w
        self.env = simpy.Environment()
        self.router_ns = w.chip.noc.router_latency_ns
        self.routers = {}
        for r in range(w.chip.noc.routers):
            self.routers[r] = _Router(self, r)
        self.nodes = [self._nodes(p, tree) for p, tree in enumerate(w.trees)]
        self.pe = [_PEState() for _ in range(w.pe_count)]
        self.forward_int = w.forward.astype(np.int64)

    def _nodes(self, source: int, tree) -> dict | None:
        """What each router of ``source``'s tree does with its trains."""
        if tree is None:
            return None
        nodes = {}
        for r in set(tree.local) | set(tree.children) | {tree.source_router}:
            local = tree.local.get(r, ())
            consumers = tuple(q for q in local if self.w.forward[source, q])
            ports = tuple((self.routers[r].ports.setdefault(n, _Port()), self.routers[n])
                          for n in tree.children.get(r, ()))
            nodes[r] = (bool(local), consumers, ports)
        return nodes
    def deliver(self, event) -> None:
        """A train's last packet is at its local same-step consumers: each serves it after its queue."""
        train, consumers = event.value
        now = self.env.now
        for q in consumers:
            st = self.pe[q]
            st.free_at = max(st.free_at, now) + train.events * st.per_event_ns
            st.pending -= 1
            if st.pending == 0:
                st.all_in.succeed()

    def pe_process(self, q: int, t: int, sizes: np.ndarray, frac: np.ndarray, out: dict):
        env, w = self.env, self.w
        st = self.pe[q]
        t0 = env.now
        if w.dram_ns[t, q] > 0:
            yield env.timeout(w.dram_ns[t, q])
        if st.pending > 0:
            yield st.all_in
        if st.free_at > env.now:
            yield env.timeout(st.free_at - env.now)
        start = env.now
        update = w.update_ns[t, q]
        nodes = self.nodes[q]
        router = self.routers[int(w.routers[q])]
        for i in range(int(w.train_count[t, q])):
            release = start + frac[i] * update
            if release > env.now:
                yield env.timeout(release - env.now)
            n = int(sizes[i])
            router.put((_Train(q, nodes, n, max(n, 1), w.packet_ns[q]), 0.0))
        if start + update > env.now:
            yield env.timeout(start + update - env.now)
        out["start"][q] = start - t0
        out["end"][q] = env.now - t0

    def run_step(self, t: int, sizes: np.ndarray, frac: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        env, w = self.env, self.w
        t0 = env.now
        expected = w.train_count[t] @ self.forward_int  # trains each PE waits for in this step
        for q, st in enumerate(self.pe):
            st.per_event_ns = w.per_event_ns[t, q]
            # Recurrent events wait at the PE; they are served first (all work, if nothing is received).
            own = w.accumulate_ns[t, q] - w.forward_events[t, q] * st.per_event_ns
            st.free_at = t0 + w.dram_ns[t, q] + own
            st.pending = int(expected[q])
            st.all_in = env.event()
        out = {"start": np.zeros(w.pe_count), "end": np.zeros(w.pe_count)}
        for q in range(w.pe_count):
            env.process(self.pe_process(q, t, sizes[t, q], frac[t, q], out))
        env.run()
        return env.now - t0, out["start"], out["end"]


def simpy_timing(w: Workload) -> Timing:
    sim = _Sim(w)
    sizes, frac = w.train_sizes(), w.train_fraction()
    latency = np.zeros(w.steps)
    start = np.zeros((w.steps, w.pe_count))
    end = np.zeros((w.steps, w.pe_count))
    for t in range(w.steps):
        latency[t], start[t], end[t] = sim.run_step(t, sizes, frac)
    xy = lambda r: (int(r % w.chip.noc.mesh_columns), int(r // w.chip.noc.mesh_columns))  # noqa: E731
    waits = [
        {"from_router": xy(a), "to_router": xy(b), "trains_waited": link.trains_waited,
         "wait_ns": link.wait_ns, "max_wait_ns": link.max_wait_ns}
        for a, router in sim.routers.items() for b, link in sorted(router.ports.items()) if link.trains_waited
    ]
    waits.sort(key=lambda d: -d["wait_ns"])
    return Timing(latency_ns=latency, update_start_ns=start, end_ns=end, link_waits=waits)
