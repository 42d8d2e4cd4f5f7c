"""Time and energy of event traces: a 2-PE model by hand, SimPy against analytic, queueing where links are shared."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from eventsim.checkpoint import load_checkpoint
from eventsim.engine import simulate_tokens
from eventsim.errors import EventsimError
from eventsim.placement import Placement
from eventsim.trace import GRADED, EventTrace
from hw import evaluate, load_chip, map_model
from hw.report import gpu_comparison
from hw.timing_analytic import analytic_timing
from hw.workload import build_workload

TINY_CHIP = """
name = "tiny"
description = "a 1 GHz chip with one PE per router, for arithmetic by hand"
sources = []

[pe]
count = {pes}
clock_mhz = 1000.0
sram_bytes_per_pe = 4096
sram_banks_per_pe = 1
sram_reserved_bytes_per_pe = 0
cycles_per_mac = 2.0
cycles_per_ac = 1.0
cycles_per_row_slice = 1.0
cycles_per_event_received = 3.0
cycles_per_event_emitted = 1.0
cycles_per_neuron_update = 5.0

[storage]
value_bytes = 4
index_bytes = 2
pointer_bytes = 2
state_word_bytes = 4
event_buffer_bytes_per_pe = 0
sram_access_bytes = 4

[noc]
mesh_columns = {pes}
mesh_rows = 1
pes_per_router = 1
router_latency_ns = 10.0
link_bandwidth_bytes_per_ns = 1.0
packet_bytes_graded = 8
packet_bytes_binary = 4

[dram]
latency_ns = 50.0
bandwidth_bytes_per_ns = 4.0
word_bytes = 4

[energy]
energy_pj_per_cycle = 1.0
energy_pj_per_mac = 4.6
energy_pj_per_ac = 0.9
energy_pj_per_neuron_update = 2.0
energy_pj_per_event_received = 0.5
energy_pj_per_event_emitted = 0.5
energy_pj_per_sram_access = 10.0
energy_pj_per_router_traversal = 3.0
energy_pj_per_link_hop = 7.0
energy_pj_per_dram_word = 100.0
static_power_w_chip = 0.001
static_power_w_per_pe = 0.0005
"""


def tiny_chip(tmp_path, pes: int):
    path = tmp_path / f"tiny{pes}.toml"
    path.write_text(TINY_CHIP.format(pes=pes))
    return load_chip(path)


def make_trace(bounds, kinds, routes, **counters) -> EventTrace:
    placement = Placement(bounds)
    P = placement.pe_count
    steps = len(next(iter(counters.values())))
    full = {name: np.zeros((steps, P), np.int64) for name in
            ("events_received", "events_emitted", "macs", "acs", "row_slices", "neuron_updates", "dram_words")}
    full.update({k: np.array(v, np.int64) for k, v in counters.items()})
    return EventTrace(
        placement=placement,
        pe_population=placement.pe_population_index(),
        population_kinds=tuple(kinds),
        event_type=np.full(P, GRADED),
        routes=np.array(routes, bool),
        synapses_stored=np.zeros(P, np.int64),
        neurons=np.array([s.size for s in placement.slices()]),
        **full,
    )


def two_pe_trace() -> EventTrace:
    """PE 0: embedding of 3 dims (router 0); PE 1: EGRU of 2 neurons (router 1), recurrent onto itself.

    Step 0: the token's row has 3 non-zero dims -> 3 events to PE 1 (6 MACs); PE 1 updates 2 neurons, 1 fires.
    Step 1: 2 non-zero dims -> 2 events, plus PE 1's 1 recurrent event from step 0 (5 MACs); nothing fires.
    """
    return make_trace(
        {"embedding": (0, 3), "layers.0": (0, 2)}, ("embedding", "egru"),
        routes=[[False, True], [False, True]],
        events_received=[[0, 3], [0, 3]],
        events_emitted=[[3, 1], [2, 0]],
        macs=[[0, 6], [0, 5]],
        row_slices=[[0, 3], [0, 3]],
        neuron_updates=[[0, 2], [0, 2]],
        dram_words=[[3, 0], [3, 0]],
    )


@pytest.mark.parametrize("timing", ["analytic", "simpy"])
def test_two_pe_model_by_hand(tmp_path, timing):
    chip = tiny_chip(tmp_path, 2)
    report = evaluate(two_pe_trace(), chip, timing=timing, packet_trains=1)
    # Clock 1 GHz: 1 cycle = 1 ns. Packet 8 B over 1 B/ns: 8 ns per packet per link. Router 10 ns.
    # Step 0.
    #   PE 0: DRAM 50 + 3 words x 4 B / 4 B/ns = 53 ns; sends 3 events x 1 cycle = 3 ns -> one train of 3 at 56.
    #   The train crosses 1 link: at PE 1 at 56 + (1 + 1) x 10 + (1 + 3 - 1) x 8 = 100.
    #   PE 1: per event (3 x 3 received + 3 x 1 rows + 6 x 2 MACs) / 3 = 8 ns; queue done at 100 + 24 = 124;
    #   update 2 x 5 + 1 emitted x 1 = 11 -> 135; its event goes to itself (0 links): delivered 135 + 10 = 145.
    # Step 1.
    #   PE 0: 53 + 2 = 55, train of 2 at PE 1 at 55 + 20 + (1 + 2 - 1) x 8 = 91.
    #   PE 1: per event (3 x 3 + 3 x 1 + 5 x 2) / 3 = 22/3 ns; the recurrent event is served first (done 22/3),
    #   the 2 forward ones from 91: 91 + 44/3; update 2 x 5 = 10 -> 101 + 44/3 = 347/3 ns.
    assert report.latency_ns == pytest.approx([145.0, 347 / 3], rel=1e-12)
    assert report.pe_update_start_ns[:, 1] == pytest.approx([124.0, 91 + 44 / 3], rel=1e-12)
    # Packets: 3 + 1, then 2. Hops: PE 0's tree has 1 link, PE 1's none: 3 x 1 + 1 x 0, then 2 x 1.
    assert report.packets.tolist() == [4, 2]
    assert report.deliveries.tolist() == [4, 2]
    assert report.hops.tolist() == [3, 2]
    e = report.energy_pj
    # Compute, step 0: busy cycles 3 (PE 0) + 24 + 11 (PE 1) = 38 x 1 pJ; 6 MACs x 4.6; 2 updates x 2;
    # 3 received x 0.5; 4 emitted x 0.5 -> 38 + 27.6 + 4 + 1.5 + 2 = 73.1.
    # Step 1: 2 + 22 + 10 = 34; 5 x 4.6 = 23; 4; 1.5; 2 x 0.5 = 1 -> 63.5.
    assert e["compute"] == pytest.approx([73.1, 63.5])
    # SRAM (4-byte accesses, 10 pJ): per MAC 4 (weight) + 2 (index) + 2 x 4 (accumulator read, write) = 14 B;
    # per row slice 2 x 2 B; per EGRU update 2 x 14 words x 4 B = 112 B.
    # Step 0: 6 x 14 + 3 x 4 + 2 x 112 = 320 B = 80 accesses; step 1: 70 + 12 + 224 = 306 B = 76.5 accesses.
    assert e["sram"] == pytest.approx([800.0, 765.0])
    # NoC: PE 0's packet visits 2 routers (3 pJ) and 1 link (7 pJ) = 13 pJ; PE 1's visits 1 router = 3 pJ.
    assert e["noc"] == pytest.approx([3 * 13 + 3, 2 * 13])
    # DRAM: 3 words x 100 pJ each step.
    assert e["dram"] == pytest.approx([300.0, 300.0])
    # Static: (0.001 + 2 x 0.0005) W = 2 mW; 2 mW x 1 ns = 2 pJ.
    assert e["static"] == pytest.approx([2 * 145.0, 2 * 347 / 3])
    rec = report.records()
    assert rec[0]["energy_pj"] == pytest.approx(73.1 + 800 + 42 + 300 + 290)
    assert rec[0]["power_w"] == pytest.approx((73.1 + 800 + 42 + 300 + 290) / 145 * 1e-3)


def test_trains_split_emission_evenly(tmp_path):
    """7 events in 3 trains: 3, 2, 2 packets leaving at 1/3, 2/3 and 3/3 of the update."""
    trace = make_trace({"embedding": (0, 7), "layers.0": (0, 1)}, ("embedding", "egru"),
                       routes=[[False, True], [False, False]],
                       events_received=[[0, 7]], events_emitted=[[7, 0]], row_slices=[[0, 7]],
                       dram_words=[[7, 0]], neuron_updates=[[0, 1]])
    w = build_workload(trace, tiny_chip(tmp_path, 2), packet_trains=3)
    assert w.train_sizes()[0, 0].tolist() == [3, 2, 2]
    assert w.train_fraction()[0, 0] == pytest.approx([1 / 3, 2 / 3, 1])
    # PE 0: DRAM 50 + 28/4 = 57; update 7 ns: trains leave at 57 + 7/3, 57 + 14/3, 64 and arrive after
    # 20 + (1 + m - 1) x 8 ns: 59.33 + 44, 61.67 + 36, 64 + 36 = 103.33, 97.67, 100. PE 1 spends 4 ns per event
    # (3 cycles to receive, 1 row slice): sorted arrivals 97.67 (2), 100 (2), 103.33 (3) give
    # max(97.67 + 28, 100 + 20, 103.33 + 12) = 125.67; then its update, 5 ns.
    t = analytic_timing(w)
    assert t.latency_ns[0] == pytest.approx(57 + 14 / 3 + 36 + 28 + 5)


def contended_trace() -> EventTrace:
    """PEs 0 and 1 (routers 0 and 1) each send 10 events to PE 2 (router 2) at once; both trains need link 1 -> 2."""
    return make_trace({"layers.0": (0, 1, 2), "decoder": (0, 1)}, ("egru", "readout"),
                      routes=[[False, False, True], [False, False, True], [False, False, False]],
                      events_received=[[0, 0, 20]], events_emitted=[[10, 10, 0]])


def test_contention_delays_simpy_and_shows_the_link(tmp_path):
    chip = tiny_chip(tmp_path, 3)
    trace = contended_trace()
    analytic = evaluate(trace, chip, timing="analytic", packet_trains=1)
    simpy = evaluate(trace, chip, timing="simpy", packet_trains=1)
    # Both trains leave at 10 ns (10 events x 1 cycle). PE 1's train gets link 1 -> 2 at 20 and holds it
    # 10 x 8 = 80 ns; PE 0's train reaches router 1 at 28 and wants the link at 38: it waits until 100 (62 ns).
    # Analytic (no waiting): PE 0's train at PE 2 at 10 + 3 x 10 + (2 + 10 - 1) x 8 = 128, PE 1's at 110;
    # PE 2 serves 3 ns per event: max(110 + 60, 128 + 30) = 170.  SimPy: PE 0's train arrives 62 ns later
    # at 190: 110 + 30 = 140, then 190 + 30 = 220.
    assert analytic.latency_ns[0] == pytest.approx(170.0)
    assert simpy.latency_ns[0] == pytest.approx(220.0)
    assert simpy.link_waits == [
        {"from_router": (1, 0), "to_router": (2, 0), "trains_waited": 1, "wait_ns": pytest.approx(62.0),
         "max_wait_ns": pytest.approx(62.0)}
    ]
    assert analytic.link_waits == []
    assert simpy.summary()["link_waits"]["wait_ns_total"] == pytest.approx(62.0)


@pytest.fixture(scope="module")
def engine_run(small_egru):
    ck = load_checkpoint(small_egru)
    chip = load_chip("spinnaker2")
    placement, mapping = map_model(ck, chip, 30)  # 30 PEs over 8 routers, so links are shared
    ids = np.random.default_rng(0).integers(0, 500, 40)
    return ck, chip, mapping, simulate_tokens(ck, ids, placement).trace


def test_simpy_matches_analytic_without_contention(engine_run):
    _, chip, mapping, trace = engine_run
    fast = dataclasses.replace(chip, noc=dataclasses.replace(chip.noc, link_bandwidth_bytes_per_ns=1e9))
    a = evaluate(trace, fast, mapping, timing="analytic")
    s = evaluate(trace, fast, mapping, timing="simpy")
    assert sum(d["wait_ns"] for d in s.link_waits) < 1e-3
    assert np.abs(s.latency_ns / a.latency_ns - 1).max() < 0.01
    assert np.abs(s.total_energy_pj / a.total_energy_pj - 1).max() < 0.01
    # On the preset chip as well (its queueing, if any, is small).
    a = evaluate(trace, chip, mapping, timing="analytic")
    s = evaluate(trace, chip, mapping, timing="simpy")
    assert np.abs(s.latency_ns / a.latency_ns - 1).max() < 0.01
    assert (s.latency_ns >= a.latency_ns - 1e-6).all()


def test_simpy_never_earlier_than_analytic_on_slow_links(engine_run):
    _, chip, mapping, trace = engine_run
    slow = dataclasses.replace(chip, noc=dataclasses.replace(chip.noc, link_bandwidth_bytes_per_ns=0.01))
    a = evaluate(trace, slow, mapping, timing="analytic")
    s = evaluate(trace, slow, mapping, timing="simpy")
    assert (s.latency_ns >= a.latency_ns - 1e-6).all()
    assert s.latency_ns.sum() > 1.05 * a.latency_ns.sum()
    assert s.link_waits and s.link_waits[0]["wait_ns"] > 0
    assert (s.packets == a.packets).all() and (s.hops == a.hops).all()


def test_report_records_summary_and_pe_trace_file(engine_run, tmp_path):
    ck, chip, mapping, trace = engine_run
    report = evaluate(trace, chip, mapping)
    rows = report.records()
    assert len(rows) == trace.steps
    parts = ("compute", "sram", "noc", "dram", "static")
    for row in rows:
        assert row["energy_pj"] == pytest.approx(sum(row[f"energy_{p}_pj"] for p in parts))
        assert row["power_w"] == pytest.approx(row["energy_pj"] / row["latency_ns"] * 1e-3)
    s = report.summary()
    assert s["tokens"] == trace.steps and s["pes_used"] == 30
    assert s["packets_per_token"] == pytest.approx(trace.packets_sent().sum() / trace.steps)
    assert s["mapping"]["pes_used"] == 30
    path = report.write_pe_trace(tmp_path / "pe.csv", trace)
    with open(path) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == trace.steps * trace.pe_count
    assert sum(int(r["macs"]) for r in table) == int(trace.macs.sum())
    assert table[0]["layer"] == "embedding"
    assert sum(float(r["energy_pj"]) for r in table) == pytest.approx(
        sum(report.energy_pj[p].sum() for p in parts[:-1]), rel=1e-6)


def test_gpu_comparison_uses_only_given_figures():
    g = gpu_comparison(2e6, gpu_watts=60.0, gpu_seconds_per_token=0.02)  # 2 uJ per token on the chip
    assert g["gpu_energy_j_per_token"] == pytest.approx(1.2)
    assert g["gpu_over_chip_energy"] == pytest.approx(1.2 / 2e-6)
    with pytest.raises(EventsimError, match="both"):
        gpu_comparison(2e6, gpu_watts=60.0, gpu_seconds_per_token=None)
    with pytest.raises(EventsimError, match="positive"):
        gpu_comparison(2e6, gpu_watts=-1.0, gpu_seconds_per_token=0.1)


def test_trace_that_breaks_the_routing_contract(tmp_path):
    trace = two_pe_trace()
    trace.events_received[1, 1] = 7  # routes deliver 2 + 1
    with pytest.raises(EventsimError, match="trace step 1, PE 1: 7 events received"):
        evaluate(trace, tiny_chip(tmp_path, 2))
    with pytest.raises(EventsimError, match="unknown timing"):
        evaluate(two_pe_trace(), tiny_chip(tmp_path, 2), timing="exact")
