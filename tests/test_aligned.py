"""Cache-line-aligned buffers: the weight tables and the encoder's per-input buffers start on a 64-byte line."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from eventsim import aligned
from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.encoder_engine import EncoderEngine, _Run
from eventsim.synthetic_encoder import random_encoder


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.uint16, np.int64, np.uint8])
@pytest.mark.parametrize("shape", [0, 1, 7, (3, 5), (2, 3, 4), 1000])
def test_empty_zeros_copy_aligned(dtype, shape):
    for _ in range(5):  # numpy's own arrays land 16 bytes past a line here; several tries cover the offsets
        a = aligned.empty(shape, dtype)
        z = aligned.zeros(shape, dtype)
        assert aligned.is_aligned(a) and aligned.is_aligned(z)
        assert a.dtype == dtype and a.shape == np.empty(shape).shape and a.flags.c_contiguous
        assert not z.any()
    src = np.arange(np.prod(np.empty(shape).shape)).reshape(np.empty(shape).shape) % 100
    c = aligned.copy(src, dtype)
    assert aligned.is_aligned(c) and c.dtype == dtype
    np.testing.assert_array_equal(c, src.astype(dtype))


def test_other_alignment():
    a = aligned.empty(10, np.float64, align=4096)
    assert a.ctypes.data % 4096 == 0 and a.size == 10


def test_views_keep_their_memory():
    """The aligned array is a view of a larger buffer that nothing else names: it must keep it alive."""
    a = aligned.copy(np.arange(100.0))
    gc.collect()
    _ = [np.full(1000, -1.0) for _ in range(100)]  # reuse of freed memory would show here
    np.testing.assert_array_equal(a, np.arange(100.0))


def test_encoder_tables_and_run_buffers_start_on_a_line(tmp_path):
    manifest, tensors = random_encoder("spikingbert", vocab_size=60, max_positions=8, hidden=16, intermediate=32,
                                       heads=2, blocks=2, seed=3)
    save_checkpoint(tmp_path / "e.safetensors", manifest, tensors)
    engine = EncoderEngine.from_checkpoint(load_checkpoint(tmp_path / "e.safetensors"))
    tb = engine.net.table
    for name in ("dense_val", "syn_val", "syn_idx", "rowptr", "nnz_tab"):
        assert aligned.is_aligned(getattr(tb, name)), name
    run = _Run(engine.net, np.arange(4, 12), 3, False, False)
    for name in ("vals", "prev_vals", "ev_idx", "prev_ev_idx", "ev_cnt", "prev_ev_cnt", "u", "asr_num", "cur_num",
                 "qt", "st", "ot", "params", "tmp_val", "cat_idx"):
        assert aligned.is_aligned(getattr(run, name)), name
