"""The engine against the numpy oracle: logits, events and op counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import run_reference

from eventsim.checkpoint import load_checkpoint
from eventsim.engine import Engine, simulate_tokens
from eventsim.network import compile_network
from eventsim.placement import Placement, even_placement
from eventsim.synthetic import random_language_model, write_random_language_model


def _layer_macs(result, ck):
    pop = result.trace.pe_population
    return np.stack([result.trace.macs[:, pop == p].sum(axis=1) for p in range(1, len(ck.manifest.layers))], axis=1)


@pytest.mark.parametrize("fixture", ["small_egru", "small_lstm"])
@pytest.mark.parametrize("neurons_per_pe", [7, 1000])
@pytest.mark.parametrize("dense_threshold", [0.3, 2.0])
def test_engine_equals_reference(request, fixture, neurons_per_pe, dense_threshold):
    ck = load_checkpoint(request.getfixturevalue(fixture))
    vocab = ck.manifest.layers[0].num_embeddings
    tokens = np.random.default_rng(0).integers(0, vocab, 60)
    res = simulate_tokens(ck, tokens, placement=even_placement(ck.manifest, neurons_per_pe),
                          record_logits=True, record_outputs=True, dense_threshold=dense_threshold, chunk_tokens=17)
    ref = run_reference(ck, tokens)
    np.testing.assert_allclose(res.logits, ref["logits"], rtol=1e-9, atol=1e-12)
    for i, out in enumerate(ref["outputs"]):
        np.testing.assert_allclose(res.layer_outputs[i], out, rtol=1e-9, atol=1e-12)
        if ck.manifest.layers[i + 1].kind == "egru":
            np.testing.assert_array_equal(res.layer_events[:, i], np.count_nonzero(out, axis=1))
        else:
            np.testing.assert_array_equal(res.layer_events[:, i], out.shape[1])
    np.testing.assert_array_equal(_layer_macs(res, ck), ref["macs"])


def test_log_probabilities_and_top3(small_egru):
    ck = load_checkpoint(small_egru)
    tokens = np.random.default_rng(3).integers(0, 500, 30)
    res = simulate_tokens(ck, tokens, record_logits=True)
    logits = res.logits
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    np.testing.assert_allclose(res.target_logprob[:-1], logits[np.arange(29), tokens[1:]] - lse[:-1], rtol=1e-12)
    assert np.isnan(res.target_logprob[-1])
    np.testing.assert_array_equal(res.topk_ids, np.argsort(-logits, axis=1, kind="stable")[:, :3])


def test_state_carries_across_chunks_and_reset_restarts(small_egru):
    ck = load_checkpoint(small_egru)
    tokens = np.random.default_rng(4).integers(0, 500, 40)
    whole = simulate_tokens(ck, tokens, chunk_tokens=1000, record_logits=True)
    pieces = simulate_tokens(ck, tokens, chunk_tokens=3, record_logits=True)
    np.testing.assert_array_equal(whole.logits, pieces.logits)
    np.testing.assert_array_equal(whole.trace.macs, pieces.trace.macs)
    engine = Engine.from_checkpoint(ck)
    first = engine.simulate(tokens, record_logits=True)
    again = engine.simulate(tokens, record_logits=True)
    np.testing.assert_array_equal(first.logits, again.logits)


def test_per_pe_counters_add_up(small_egru):
    """Events received per PE = events its sources emitted that are routed to it."""
    ck = load_checkpoint(small_egru)
    tokens = np.random.default_rng(5).integers(0, 500, 25)
    res = simulate_tokens(ck, tokens, placement=even_placement(ck.manifest, 9))
    tr = res.trace
    pop = tr.pe_population
    # Recurrent events arrive one step late; everything else within the step.
    for q in range(tr.pe_count):
        expected = np.zeros(tr.steps, dtype=np.int64)
        for p in range(tr.pe_count):
            if not tr.routes[p, q]:
                continue
            if pop[p] == pop[q]:
                expected[1:] += tr.events_emitted[:-1, p]
            else:
                expected += tr.events_emitted[:, p]
        np.testing.assert_array_equal(tr.events_received[:, q], expected)
        np.testing.assert_array_equal(tr.row_slices[:, q], tr.events_received[:, q])
    # Neuron updates: every recurrent neuron every step; none on embedding/readout PEs.
    recurrent_pes = (pop > 0) & (pop < len(ck.manifest.layers) - 1)
    np.testing.assert_array_equal(tr.neuron_updates[:, recurrent_pes], np.broadcast_to(tr.neurons[recurrent_pes], (25, recurrent_pes.sum())))
    assert tr.neuron_updates[:, ~recurrent_pes].sum() == 0
    # Embedding reads its whole row from DRAM each step: 24 words.
    assert tr.dram_words.sum(axis=1).tolist() == [24] * 25
    # Packets: each emitted event leaves its PE once (multicast), the readout emits none.
    np.testing.assert_array_equal(tr.packets_sent().sum(), tr.events_emitted.sum())


def test_lstm_dense_macs_match_published_shape(tmp_path):
    """LSTM 400 -> 1150, 1150, 400: 4*1150*(400+1150) + 4*1150*(1150+1150) + 4*400*(1150+400)
    = 7,130,000 + 10,580,000 + 2,480,000 = 20,190,000 MACs per token. With every weight kept
    and every h_i sent, the counted MACs of the second token equal that exactly."""
    path = write_random_language_model(tmp_path / "lstm.safetensors", cell="lstm", vocab_size=50, emb_size=400,
                                       hidden_sizes=(1150, 1150, 400), weight_sparsity=0.0, seed=0)
    ck = load_checkpoint(path)
    net = compile_network(ck)
    assert int(net.dense_macs_per_layer.sum()) == 20_190_000
    res = simulate_tokens(ck, [3, 7, 9])
    pop = res.trace.pe_population
    recurrent = (pop > 0) & (pop < 4)
    per_token = res.trace.macs[:, recurrent].sum(axis=1)
    assert per_token[1] == per_token[2] == 20_190_000
    # First token: no recurrent events yet, so only the input kernels count.
    assert per_token[0] == 4 * 1150 * 400 + 4 * 1150 * 1150 + 4 * 400 * 1150


def test_placement_validation(small_egru):
    ck = load_checkpoint(small_egru)
    bad = dict(even_placement(ck.manifest).bounds)
    bad["layers.0"] = (0, 20, 10, 40)
    from eventsim.errors import EventsimError
    with pytest.raises(EventsimError, match="layers.0"):
        compile_network(ck, Placement(bad))


def test_synthetic_pruning_hits_requested_sparsity():
    _, tensors = random_language_model(cell="egru", vocab_size=50, emb_size=10, hidden_sizes=(30, 10),
                                       weight_sparsity=0.8, seed=0)
    w = tensors["layers.0.recurrent_kernel"]
    assert abs(1 - np.count_nonzero(w) / w.size - 0.8) < 0.01


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cell=st.sampled_from(["egru", "lstm"]),
    emb=st.integers(2, 12),
    hidden=st.lists(st.integers(2, 20), min_size=0, max_size=2),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    thr_mean=st.floats(0.02, 0.6),
    per_pe=st.integers(1, 25),
    dense_threshold=st.sampled_from([0.0, 0.3, 2.0]),
    seed=st.integers(0, 10_000),
)
def test_engine_equals_reference_for_any_shape(tmp_path, cell, emb, hidden, sparsity, thr_mean, per_pe,
                                               dense_threshold, seed):
    """Any stack, sparsity, threshold, placement and storage: same logits, outputs and MACs as the oracle."""
    path = write_random_language_model(tmp_path / f"h{seed}.safetensors", cell=cell, vocab_size=40, emb_size=emb,
                                       hidden_sizes=(*hidden, emb), weight_sparsity=sparsity, thr_mean=thr_mean,
                                       seed=seed)
    ck = load_checkpoint(path)
    tokens = np.random.default_rng(seed).integers(0, 40, 25)
    res = simulate_tokens(ck, tokens, placement=even_placement(ck.manifest, per_pe), record_logits=True,
                          record_outputs=True, dense_threshold=dense_threshold, chunk_tokens=7)
    ref = run_reference(ck, tokens)
    np.testing.assert_allclose(res.logits, ref["logits"], rtol=1e-9, atol=1e-12)
    for i, out in enumerate(ref["outputs"]):
        np.testing.assert_allclose(res.layer_outputs[i], out, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(_layer_macs(res, ck), ref["macs"])
    # The per-PE counters add up to the oracle's total.
    assert res.trace.macs.sum() == ref["macs"].sum()


def test_packets_follow_routes(small_egru):
    """packets(t)[p, q] = events p emitted at t if p routes to q, else 0; summed over q that is
    events x fan-out (each destination PE receives its own copy of a multicast packet)."""
    ck = load_checkpoint(small_egru)
    res = simulate_tokens(ck, np.random.default_rng(6).integers(0, 500, 10), placement=even_placement(ck.manifest, 9))
    tr = res.trace
    for t in range(tr.steps):
        pk = tr.packets(t)
        np.testing.assert_array_equal(pk, np.where(tr.routes, tr.events_emitted[t][:, None], 0))
        np.testing.assert_array_equal(pk.sum(axis=1), tr.events_emitted[t] * tr.routes.sum(axis=1))
