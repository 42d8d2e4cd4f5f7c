"""The encoder engine against the numpy oracle of the contract: spikes, logits, ASR and exact counts."""

from __future__ import annotations

import numpy as np
import pytest
from encoder_reference import attention_acs, run_reference

from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.encoder_engine import EncoderEngine
from eventsim.encoder_network import dense_counts
from eventsim.errors import EventsimError
from eventsim.placement import even_placement
from eventsim.synthetic_encoder import random_encoder
from eventsim.trace import COUNTERS

SMALL = dict(vocab_size=80, max_positions=8, hidden=16, intermediate=32, mlp_ratio=2, heads=2, blocks=2)
CASES = [
    ("spikingbert", 0.0, False),
    ("spikingbert", 0.9, True),
    ("spikingbert", 0.0, True),
    ("spikformer", 0.0, False),
    ("spikformer", 0.9, False),
]


def _checkpoint(tmp_path, style, sparsity, feedback, seed=1, **kw):
    manifest, tensors = random_encoder(style, **{**SMALL, **kw}, weight_sparsity=sparsity, feedback=feedback,
                                       seed=seed)
    path = tmp_path / f"{style}_{sparsity}_{feedback}.safetensors"
    save_checkpoint(path, manifest, tensors)
    return load_checkpoint(path)


@pytest.mark.parametrize("style,sparsity,feedback", CASES)
@pytest.mark.parametrize("neurons_per_pe", [5, 256])
@pytest.mark.parametrize("dense_threshold", [None, 0.0, 2.0])  # the engine's rule, all dense rows, all CSR
def test_engine_equals_reference(tmp_path, style, sparsity, feedback, neurons_per_pe, dense_threshold):
    ck = _checkpoint(tmp_path, style, sparsity, feedback)
    ids = np.random.default_rng(0).integers(0, 80, 7)
    T = 50
    engine = EncoderEngine.from_checkpoint(ck, even_placement(ck.manifest, neurons_per_pe),
                                           dense_threshold=dense_threshold)
    stored_dense = engine.net.table.blocks[:, 0]
    if dense_threshold is not None:
        assert (stored_dense == (1 if dense_threshold == 0.0 else 0)).all()
    res = engine.run(ids, T, record_spikes=True, record_asr=True)
    ref = run_reference(ck, ids, T)
    assert res.populations == tuple(ref["spikes"])
    for name, s in ref["spikes"].items():
        np.testing.assert_array_equal(res.spikes[name], s, err_msg=name)
        np.testing.assert_allclose(res.asr[name], ref["asr"][name], rtol=0, atol=1e-12, err_msg=name)
        assert 0 < s.mean() < 1 or name.endswith("attn_lif"), name  # activity neither silent nor saturated
    np.testing.assert_allclose(res.logits, ref["logits"], rtol=0, atol=1e-9)
    # Counted ACs and MACs equal the oracle's count from its own spikes and the weights, step by step.
    np.testing.assert_array_equal(res.counts["acs"], ref["acs"])
    np.testing.assert_array_equal(res.counts["macs"], ref["macs"])
    # Recorded ASR statistics are those of the spikes.
    for p, name in enumerate(res.populations):
        np.testing.assert_allclose(res.asr_mean[:, p], ref["asr"][name].mean(axis=(1, 2)), atol=1e-12)
        np.testing.assert_allclose(res.spike_fraction[:, p], ref["spikes"][name].mean(axis=(1, 2)), atol=1e-15)
        np.testing.assert_allclose(res.asr_final[name], ref["asr"][name][-1], atol=1e-12)
    assert res.counts["spikes"].sum() == sum(s.sum() for s in ref["spikes"].values())
    # The trace is the same counts by PE.
    assert res.trace.acs.sum() == res.counts["acs"].sum() + res.counts_once["acs"]
    assert res.trace.steps == T


@pytest.mark.parametrize("style,sparsity,feedback", CASES)
def test_per_pe_counts_do_not_depend_on_storage(tmp_path, style, sparsity, feedback):
    """Every counter, per step and PE, is the same whether the blocks are stored dense (unpruned ones are
    counted per spike list from the first row's share) or as CSR (counted per spike from each row's), on a
    placement that splits every population over several PEs."""
    ck = _checkpoint(tmp_path, style, sparsity, feedback)
    ids = np.random.default_rng(8).integers(0, 80, 7)
    traces = [EncoderEngine.from_checkpoint(ck, even_placement(ck.manifest, 5), dense_threshold=dt).run(ids, 12).trace
              for dt in (0.0, 2.0)]
    assert traces[0].placement.pe_count > 10
    for name in COUNTERS:
        np.testing.assert_array_equal(getattr(traces[0], name), getattr(traces[1], name), err_msg=name)


def test_attention_acs_formula_by_hand():
    # One head, N = 3 positions, d = 2 features.
    # Q (real) non-zeros per feature column: c0 -> 2 queries, c1 -> 1 query.
    # K spikes per column: c0 -> 2 keys, c1 -> 3 keys.  Q K^T ACs = 2*2 + 1*3 = 7:
    # each key spike (m, c) adds Q[n, c] into S[n, m] for every query n with Q[n, c] != 0.
    q = np.array([[0.5, 0.0], [0.0, 0.0], [-1.0, 2.0]])
    k = np.array([[1, 1], [0, 1], [1, 1]], float)
    # P with column non-zeros (1, 3, 0); V spikes per row (2, 1, 2): P V ACs = 1*2 + 3*1 + 0*2 = 5:
    # each value spike (j, c) adds P[n, j] into y[n, c] for every n with P[n, j] != 0.
    p = np.array([[0.2, 0.1, 0.0], [0.0, 0.3, 0.0], [0.0, 0.4, 0.0]])
    v = np.array([[1, 1], [0, 1], [1, 1]], float)
    assert attention_acs(q, k, p, v) == 7 + 5


@pytest.mark.parametrize("style", ["spikingbert", "spikformer"])
def test_attention_acs_from_spike_tensors(tmp_path, style):
    """Each attention node's counted ACs equal the formula over the oracle's Q, K, P, V of that node."""
    ck = _checkpoint(tmp_path, style, 0.5, False)
    ids = np.arange(5, 11)
    res = EncoderEngine.from_checkpoint(ck, even_placement(ck.manifest, 3)).run(ids, 8)
    ref = run_reference(ck, ids, 8)
    for name, expected in ref["attention_acs"].items():
        assert expected.sum() > 0
        np.testing.assert_array_equal(res.node_counts["acs"][:, res.node_names.index(name)], expected, err_msg=name)


@pytest.mark.parametrize("style", ["spikingbert", "spikformer"])
def test_dense_counts_follow_the_architecture(style):
    # SpikingBERT, hidden 16, intermediate 32, 2 heads of 8, 2 blocks, N = 8, no feedback. Per block:
    #   linears from spikes: q, k, v, il1 (16x16 each) + il2 (16x32) + out (32x16) = 4*256 + 512 + 512 = 2048
    #   weights, x N = 8 -> 16384 ACs; attention: Q K^T and P V, 2 heads * 8 * 8 * 8 = 1024 each -> 2048;
    #   IL-1 LayerNorm's spike input s: 8 * 16 = 128; output LayerNorm's spike input s_IL1: 128.
    #   Per block 16384 + 2048 + 256 = 18688 ACs; 2 blocks: 37376.
    #   Biases: (16*4 + 32 + 16) * 8 = 896 adds per block; softmax: 2 * 64 adds -> 1024 per block.
    #   LIFs per block: k, v, attn, il1, out (16) + il2 (32) = 112 neurons * 8 positions = 896 updates,
    #   + embedding LIF 128: 2 * 896 + 128 = 1920.
    manifest, _ = random_encoder(style, **SMALL)
    d = dense_counts(manifest, 8)
    if style == "spikingbert":
        assert d["acs"] == 37376
        assert d["macs"] == 0
        assert d["adds"] == 2 * 1024
        assert d["exp"] == 2 * 2 * 64 and d["div"] == 2 * 8 * 16  # div per output element
        assert d["muls"] == 2 * 2 * 64  # scale 1/sqrt(8) on every score
        assert d["neuron_updates"] == d["spikes"] == 1920
        assert d["layernorm"] == 2 * 2 * 128 and d["gelu"] == 2 * 256
    else:
        # Spikformer, mlp 2x (32): linears q, k, v from R (block 0: 1 input, block 1: 3 inputs), proj,
        # fc1 from R (block 0: 2 inputs, block 1: 4), fc2.  Weights x inputs:
        #   block 0: 3*256*1 + 256 + 512*2 + 512 = 2560;  block 1: 3*256*3 + 256 + 512*4 + 512 = 5120
        #   (7680 weights) * 8 positions = 61440 ACs, + attention 2 * 1024 per block = 4096 -> 65536.
        assert d["acs"] == 65536
        assert d["exp"] == 0 and d["muls"] == 2 * 2 * 64
        # LayerNorms: q, k, v, proj, fc2 (16) + fc1 (32) = 112 per block * 8 = 896; 2 blocks.
        assert d["layernorm"] == 2 * 896
        # Biases: (16*5 + 32) * 8 = 896 adds per block.
        assert d["adds"] == 2 * 896


def test_raising_threshold_lowers_activity(tmp_path):
    ck = _checkpoint(tmp_path, "spikingbert", 0.0, False)
    ids = np.arange(3, 11)
    means = [EncoderEngine.from_checkpoint(ck, vth_scale=s).run(ids, 20).asr_mean[-1].mean() for s in (0.5, 1, 2, 4)]
    assert all(a > b for a, b in zip(means, means[1:])), means
    res_vth = EncoderEngine.from_checkpoint(ck, vth=2.0).run(ids, 20)
    res_scale = EncoderEngine.from_checkpoint(ck, vth_scale=2.0).run(ids, 20)
    np.testing.assert_array_equal(res_vth.asr_mean, res_scale.asr_mean)


def test_steady_residual_shrinks_for_if_neurons(tmp_path):
    """IF neurons with reset by subtraction: the ASR approaches clip(I_bar / V_th) (error ~ 1/t)."""
    ck = _checkpoint(tmp_path, "spikingbert", 0.0, False, blocks=1)
    res = EncoderEngine.from_checkpoint(ck).run(np.arange(3, 9), 200, record_residual=True)
    emb = res.populations.index("embedding_lif")  # constant input current: residual <= v_th / t
    assert res.steady_residual[-1, emb] <= 1.0 / 200 + 1e-12
    assert res.steady_residual[-1, emb] < res.steady_residual[9, emb]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_threshold_is_one_line_error(tmp_path, bad):
    ck = _checkpoint(tmp_path, "spikingbert", 0.0, False)
    with pytest.raises(EventsimError, match="V_th must be a finite number > 0"):
        EncoderEngine.from_checkpoint(ck, vth=bad)
    with pytest.raises(EventsimError, match="scale must be a finite number > 0"):
        EncoderEngine.from_checkpoint(ck, vth_scale=bad)


@pytest.mark.parametrize("steps", [0, -3])
def test_bad_steps_and_inputs(tmp_path, steps):
    ck = _checkpoint(tmp_path, "spikformer", 0.0, False)
    engine = EncoderEngine.from_checkpoint(ck)
    with pytest.raises(EventsimError, match="time steps T must be a positive integer"):
        engine.run([2, 3], steps)
    with pytest.raises(EventsimError, match="9 tokens exceed the model's 8 positions"):
        engine.run(np.arange(9), 4)


@pytest.mark.parametrize("style,sparsity,feedback", [CASES[1], CASES[4]])
def test_run_many_on_threads_equals_run(tmp_path, style, sparsity, feedback):
    """Inputs run two and three at a time on threads give each input's own result, bit for bit, in input order."""
    from eventsim import encoder_kernels

    assert encoder_kernels.encoder_run.targetoptions.get("nogil") is True  # else the threads would take turns
    engine = EncoderEngine.from_checkpoint(_checkpoint(tmp_path, style, sparsity, feedback))
    rng = np.random.default_rng(5)
    inputs = [rng.integers(3, 80, n) for n in (8, 3, 8, 5, 1, 8, 7)]  # mixed lengths: several step programs
    alone = [engine.run(ids, 12, record_spikes=True) for ids in inputs]
    for jobs in (1, 2, 3):
        together = list(engine.run_many(iter(inputs), 12, jobs=jobs, record_spikes=True))
        assert len(together) == len(inputs)
        for a, b in zip(alone, together):
            np.testing.assert_array_equal(a.token_ids, b.token_ids)
            np.testing.assert_array_equal(a.logits, b.logits)
            np.testing.assert_array_equal(a.asr_mean, b.asr_mean)
            for key in a.counts:
                np.testing.assert_array_equal(a.counts[key], b.counts[key])
            for name in a.spikes:
                np.testing.assert_array_equal(a.spikes[name], b.spikes[name])


def test_run_many_errors(tmp_path):
    engine = EncoderEngine.from_checkpoint(_checkpoint(tmp_path, "spikformer", 0.0, False))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(EventsimError, match="jobs must be a positive integer"):
            engine.run_many([[2, 3]], 4, jobs=bad)  # refused when called, before any input runs
    results = engine.run_many([[2, 3], np.arange(9), [4]], 4, jobs=2)
    assert next(results).logits.shape == (4, 2)
    with pytest.raises(EventsimError, match="9 tokens exceed the model's 8 positions"):
        next(results)  # a bad input fails where it is taken, with run's own message


def _assert_same_run(got, want):
    """Two runs (spikes and ASR recorded) equal bit for bit: logits, every spike and ASR, every counter."""
    np.testing.assert_array_equal(got.logits, want.logits)
    for name in want.populations:
        np.testing.assert_array_equal(got.spikes[name], want.spikes[name], err_msg=name)
        np.testing.assert_array_equal(got.asr[name], want.asr[name], err_msg=name)
    for key in want.counts:
        np.testing.assert_array_equal(got.counts[key], want.counts[key], err_msg=key)
    np.testing.assert_array_equal(got.asr_mean, want.asr_mean)


@pytest.mark.parametrize("style,sparsity,feedback", CASES)
@pytest.mark.parametrize("chunk", [2, 7, 64])
def test_chunked_schedule_is_the_step_order(tmp_path, monkeypatch, style, sparsity, feedback, chunk):
    """Segments run a chunk of steps at a time (here every piece counts as heavy, chunks of 2, 7 or more than T):
    spikes, ASR, logits and every counter are those of the step-by-step order, bit for bit, and still the
    reference's. A network with a one-step-late input runs step by step whatever the setting."""
    import eventsim.encoder_engine as ee

    ck = _checkpoint(tmp_path, style, sparsity, feedback)
    ids = np.random.default_rng(4).integers(0, 80, 6)
    T = 50
    monkeypatch.setattr(ee, "CHUNK_STEPS", 1)
    plain = EncoderEngine.from_checkpoint(ck, dense_threshold=0.0).run(ids, T, record_spikes=True, record_asr=True)
    monkeypatch.setattr(ee, "CHUNK_STEPS", chunk)
    monkeypatch.setattr(ee, "CHUNK_DENSE_BYTES", 0)
    engine = EncoderEngine.from_checkpoint(ck, dense_threshold=0.0)
    res = engine.run(ids, T, record_spikes=True, record_asr=True)
    run = ee._Run(engine.net, ids, T, False, False)
    assert run.chunk == (1 if feedback else min(chunk, T))
    assert len(run.segments) > 1
    assert run.prog[:, ee.P_SLOTTED].any() == (style == "spikingbert")  # Q (real) is read by the attention's piece
    _assert_same_run(res, plain)
    ref = run_reference(ck, ids, T)
    for name, s in ref["spikes"].items():
        np.testing.assert_array_equal(res.spikes[name], s, err_msg=name)
    np.testing.assert_array_equal(res.counts["acs"], ref["acs"])


@pytest.mark.parametrize("style,sparsity,feedback", CASES)
def test_unzeroed_buffers_are_never_read(tmp_path, monkeypatch, style, sparsity, feedback):
    """The spike-list buffers (and the current averages without the residual) are allocated without zeroing;
    filled with poison instead (list entries far outside any row, NaN values), every output is unchanged."""
    import eventsim.encoder_engine as ee

    ck = _checkpoint(tmp_path, style, sparsity, feedback)
    ids = np.random.default_rng(6).integers(0, 80, 7)
    engine = EncoderEngine.from_checkpoint(ck)
    want = engine.run(ids, 20, record_spikes=True, record_asr=True)

    class PoisonNumpy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def empty(shape, dtype=np.float64):
            return np.full(shape, 1 << 30 if np.dtype(dtype).kind == "i" else np.nan, dtype=dtype)

    monkeypatch.setattr(ee, "np", PoisonNumpy())
    got = engine.run(ids, 20, record_spikes=True, record_asr=True)
    _assert_same_run(got, want)


def test_only_heavy_pieces_run_in_chunks(tmp_path):
    """The default rule: a 256 x 1024 dense projection (1 MiB) makes its piece a segment of its own, run in
    chunks; a small or pruned network is one segment, run step by step."""
    import eventsim.encoder_engine as ee

    big = EncoderEngine.from_checkpoint(_checkpoint(tmp_path, "spikingbert", 0.0, False, hidden=256,
                                                    intermediate=1024, heads=4, blocks=1))
    run = ee._Run(big.net, np.arange(5), 20, False, False)
    assert run.chunk == min(20, ee.CHUNK_STEPS) and len(run.segments) > 1
    heavy = [(a, b) for a, b in run.segments if any(big.net.nodes[i].name.endswith(("il2.dense", "out.dense"))
                                                    for i in range(a, b))]
    assert len(heavy) == 2 and all(b - a == 3 for a, b in heavy)  # dense, GELU or LayerNorm, LIF
    small = EncoderEngine.from_checkpoint(_checkpoint(tmp_path, "spikingbert", 0.0, False))
    run = ee._Run(small.net, np.arange(5), 20, False, False)
    assert run.chunk == 1 and [tuple(s) for s in run.segments] == [(0, len(small.net.nodes))]
