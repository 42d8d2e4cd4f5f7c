"""Per-input buffers reused between inputs (eventsim.run_buffers): a reused, dirty workspace gives a fresh run's
results bit for bit, whatever ran in it before (other lengths, other record options), and results keep none of it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_encoder_engine import _assert_same_run

from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.encoder_engine import EncoderEngine
from eventsim.run_buffers import BufferPool, Workspace, zero
from eventsim.synthetic_encoder import random_encoder


def _engine(tmp_path, style, feedback=False):
    manifest, tensors = random_encoder(style, vocab_size=80, max_positions=8, hidden=16, intermediate=32,
                                       mlp_ratio=2, heads=2, blocks=2, feedback=feedback, seed=4)
    save_checkpoint(tmp_path / "e.safetensors", manifest, tensors)
    return lambda: EncoderEngine.from_checkpoint(load_checkpoint(tmp_path / "e.safetensors"))


@pytest.mark.parametrize("style,feedback", [("spikingbert", False), ("spikformer", False), ("spikingbert", True)])
def test_reused_workspace_equals_fresh_runs(tmp_path, style, feedback):
    make = _engine(tmp_path, style, feedback)
    pooled = make()
    rng = np.random.default_rng(9)
    plan = [(8, False), (3, True), (8, True), (5, False), (1, False), (8, False), (6, True)]
    for n, residual in plan:
        ids = rng.integers(3, 80, n)
        got = pooled.run(ids, 9, record_spikes=True, record_asr=True, record_residual=residual)
        want = make().run(ids, 9, record_spikes=True, record_asr=True, record_residual=residual)  # fresh buffers
        _assert_same_run(got, want)
        np.testing.assert_array_equal(got.steady_residual, want.steady_residual)
        for name in want.populations:
            np.testing.assert_array_equal(got.asr_final[name], want.asr_final[name])
    assert len(pooled.buffers._free) == 1  # one thread at a time: one workspace, reused throughout


def test_results_keep_no_view_of_the_workspace(tmp_path):
    """A result stays what it was after later inputs overwrite the buffers it was computed in."""
    engine = _engine(tmp_path, "spikingbert")()
    first = engine.run([5, 6, 7, 8], 6, record_spikes=True, record_asr=True, record_residual=True)
    kept = {name: first.asr_final[name].copy() for name in first.populations}
    kept_cur = {name: first.current_mean_final[name].copy() for name in first.populations}
    logits = first.logits.copy()
    for ids in ([9, 9, 9, 9], [40, 41, 42, 43]):
        engine.run(ids, 6, record_residual=True)
    np.testing.assert_array_equal(first.logits, logits)
    for name in first.populations:
        np.testing.assert_array_equal(first.asr_final[name], kept[name])
        np.testing.assert_array_equal(first.current_mean_final[name], kept_cur[name])


def test_pool_gives_each_thread_its_own_workspace():
    pool = BufferPool(max_pooled=2)
    held, lock = [], threading.Lock()
    barrier = threading.Barrier(4)

    def work():
        ws = pool.acquire()
        barrier.wait()  # all four hold one at once
        with lock:
            held.append(ws)
        barrier.wait()
        pool.release(ws)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(ws) for ws in held}) == 4
    assert len(pool._free) == 2  # kept up to max_pooled


def test_workspace_grows_and_zeroes():
    ws = Workspace()
    a = ws.take("x", 10, zeroed=True)
    assert a.shape == (10,) and not a.any()
    a[:] = 7.0
    b = ws.take("x", 4)  # smaller: the same memory, contents kept
    assert b.ctypes.data == a.ctypes.data and (b == 7.0).all()
    c = ws.take("x", 4, zeroed=True)
    assert not c.any() and a[4] == 7.0  # only what was asked for is cleared
    d = ws.take("x", 100, np.int32)  # larger or another dtype: a new buffer
    assert d.dtype == np.int32 and d.size == 100
    e = np.full(5, 3, np.int64)
    zero(e)
    assert not e.any()
