"""One CSR row scattered eight lanes at a time (eventsim.csr_lanes) equals the scalar loop, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eventsim.csr_lanes import scatter_row, scatter_rows

REPO = Path(__file__).resolve().parents[1]


def scalar(acc, idx, val, start, stop):
    """The definition: ``acc[idx[k]] += float64(val[k])`` for k in order."""
    out = acc.copy()
    for k in range(start, stop):
        out[int(idx[k])] += np.float64(val[k])
    return out


def csr_rows(rng, n_rows, ncols, density, idx_dtype):
    """Rows of distinct, increasing columns; values spread over many binades (a changed order would show)."""
    idx, val, ptr = [], [], [0]
    for _ in range(n_rows):
        cols = np.flatnonzero(rng.random(ncols) < density)
        idx.append(cols)
        val.append(rng.normal(size=cols.size) * np.exp(rng.uniform(-20, 20, cols.size)))
        ptr.append(ptr[-1] + cols.size)
    return (np.concatenate(idx).astype(idx_dtype), np.concatenate(val).astype(np.float32), np.array(ptr))


@pytest.mark.parametrize("idx_dtype", [np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("ncols,density", [(5, 1.0), (16, 0.5), (256, 0.1), (1024, 0.1), (300, 0.03)])
def test_scatter_row_equals_scalar_loop(idx_dtype, ncols, density):
    rng = np.random.default_rng(ncols)
    idx, val, ptr = csr_rows(rng, 40, ncols, density, idx_dtype)
    acc = rng.normal(size=ncols) * 1e3
    want, got = acc.copy(), acc.copy()
    for j in rng.integers(0, 40, 60):  # rows repeat and overlap: each adds once per column, rows in order
        want = scalar(want, idx, val, ptr[j], ptr[j + 1])
        scatter_row(got, idx, val, ptr[j], ptr[j + 1])
    np.testing.assert_array_equal(got, want)


def test_partial_chunks_touch_nothing_else():
    """Row lengths 0..17 at every start offset: only the row's columns change (the masked lanes neither read past
    the row's end nor write)."""
    ncols = 64
    idx = np.arange(ncols, dtype=np.uint16)[::-1].copy()
    val = np.arange(1, ncols + 1, dtype=np.float32)
    for start in range(0, 10):
        for length in range(0, 18):
            acc = np.zeros(ncols)
            scatter_row(acc, idx, val, start, start + length)
            want = scalar(np.zeros(ncols), idx, val, start, start + length)
            np.testing.assert_array_equal(acc, want)
            assert np.count_nonzero(acc) == length
    tail_idx, tail_val = np.array([7, 2, 5], np.uint16), np.array([1, 2, 3], np.float32)  # a row at the arrays' end
    acc = np.zeros(8)
    scatter_row(acc, tail_idx, tail_val, 1, 3)
    np.testing.assert_array_equal(acc, [0, 0, 2, 0, 0, 3, 0, 0])


NOJIT = """
import sys
import numpy as np
from eventsim.csr_lanes import scatter_row, scatter_rows
d = np.load(sys.argv[1])
acc = d["acc"].copy()
for j in d["rows"]:
    scatter_row(acc, d["idx"], d["val"], int(d["ptr"][j]), int(d["ptr"][j + 1]))
np.save(sys.argv[2], acc)
"""


def test_disable_jit_path(tmp_path):
    rng = np.random.default_rng(9)
    idx, val, ptr = csr_rows(rng, 12, 100, 0.2, np.uint16)
    acc = rng.normal(size=100)
    rows = rng.integers(0, 12, 20)
    np.savez(tmp_path / "in.npz", acc=acc, idx=idx, val=val, ptr=ptr, rows=rows)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", NOJIT, tmp_path / "in.npz", tmp_path / "out.npy"],
                   check=True, env=env, capture_output=True, text=True)
    got = acc.copy()
    for j in rows:
        scatter_row(got, idx, val, ptr[j], ptr[j + 1])
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), got)
    want = acc.copy()
    for j in rows:
        want = scalar(want, idx, val, ptr[j], ptr[j + 1])
    np.testing.assert_array_equal(got, want)


def test_scatter_rows_is_scatter_row_over_the_list():
    rng = np.random.default_rng(4)
    idx, val, ptr = csr_rows(rng, 30, 200, 0.15, np.uint16)
    ptr = np.concatenate([[0, 0, 0], ptr])  # a block whose rows start at rowptr offset 3
    rows = np.concatenate([rng.integers(0, 30, 25), [-5, -5]]).astype(np.int32)  # entries past the count unused
    acc = rng.normal(size=200)
    got, want = acc.copy(), acc.copy()
    scatter_rows(got, idx, val, ptr, 3, rows, 25)
    for j in rows[:25]:
        scatter_row(want, idx, val, ptr[3 + j], ptr[3 + j + 1])
    np.testing.assert_array_equal(got, want)
