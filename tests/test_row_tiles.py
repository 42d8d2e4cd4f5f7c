"""Register-tiled row sums (eventsim.row_tiles) equal adding the rows one at a time, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eventsim.row_tiles import TILE, add_rows, add_rows_from

REPO = Path(__file__).resolve().parents[1]


def one_at_a_time(acc, acc_off, w, w_off, rows, n_rows, ncols):
    """The definition: each row added to the whole accumulator in list order (float64 sums)."""
    out = acc.copy()
    for e in range(n_rows):
        j = int(rows[e])
        out[acc_off:acc_off + ncols] += w[w_off + j * ncols:w_off + (j + 1) * ncols].astype(np.float64)
    return out


@pytest.mark.parametrize("ncols", [1, 7, 8, 9, 32, 40, 63, TILE, TILE + 1, 96, 2 * TILE + 13, 256, 1024])
@pytest.mark.parametrize("w_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows_dtype", [np.int32, np.int64])
def test_add_rows_equals_rows_one_at_a_time(ncols, w_dtype, rows_dtype):
    rng = np.random.default_rng(ncols)
    n_in, w_off, acc_off = 37, 5, 3
    # magnitudes spread over many binades, so a different summation order would show in the last bits
    w = (rng.normal(size=w_off + n_in * ncols) * np.exp(rng.uniform(-20, 20, w_off + n_in * ncols))).astype(w_dtype)
    acc = rng.normal(size=acc_off + ncols + 4) * 1e3
    for n_rows in (0, 1, 2, 17, n_in):
        rows = np.sort(rng.choice(n_in, n_rows, replace=False)).astype(rows_dtype)
        rows = np.concatenate([rows, rng.integers(0, n_in, 3).astype(rows_dtype)])  # entries past n_rows unused
        want = one_at_a_time(acc, acc_off, w, w_off, rows, n_rows, ncols)
        got = acc.copy()
        add_rows(got, acc_off, w, w_off, rows, n_rows, ncols, ncols)
        np.testing.assert_array_equal(got, want)
        assert got[:acc_off].tolist() == acc[:acc_off].tolist() and got[acc_off + ncols:].tolist() == \
            acc[acc_off + ncols:].tolist()  # nothing outside the accumulator touched


def test_add_rows_repeated_rows_in_order():
    """A row listed twice is added twice; the order of the list is kept (not sorted)."""
    w = np.array([1.0, 2.0 ** -60, -1.0], np.float64).repeat(TILE)  # three rows of TILE columns
    acc = np.zeros(TILE)
    add_rows(acc, 0, w, 0, np.array([0, 1, 2, 1], np.int32), 4, TILE, TILE)
    np.testing.assert_array_equal(acc, np.full(TILE, 2.0 ** -60))  # ((0 + 1) + 2^-60) - 1 + 2^-60: rounding


NOJIT = """
import sys, numpy as np
from eventsim.row_tiles import add_rows, add_rows_from
d = np.load(sys.argv[1])
acc = d["acc"].copy()
add_rows(acc, 2, d["w"], 1, d["rows"], int(d["n"]), int(d["ncols"]), int(d["ncols"]))
np.save(sys.argv[2], acc)
acc = d["acc"].copy()
add_rows_from(acc, 2, d["init"], 0, d["w"], 1, d["rows"], int(d["n"]), int(d["ncols"]), int(d["ncols"]))
np.save(sys.argv[3], acc)
"""


def test_disable_jit_path(tmp_path):
    rng = np.random.default_rng(3)
    ncols, n_in = 2 * TILE + 11, 20
    w = rng.normal(size=1 + n_in * ncols).astype(np.float32)
    acc = rng.normal(size=ncols + 2)
    rows = np.sort(rng.choice(n_in, 9, replace=False)).astype(np.int32)
    init = rng.normal(size=ncols)
    np.savez(tmp_path / "in.npz", acc=acc, w=w, rows=rows, n=9, ncols=ncols, init=init)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", NOJIT, tmp_path / "in.npz", tmp_path / "out.npy", tmp_path / "from.npy"],
                   check=True, env=env, capture_output=True, text=True)
    got = acc.copy()
    add_rows(got, 2, w, 1, rows, 9, ncols, ncols)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), got)
    np.testing.assert_array_equal(got, one_at_a_time(acc, 2, w, 1, rows, 9, ncols))
    got_from = acc.copy()
    add_rows_from(got_from, 2, init, 0, w, 1, rows, 9, ncols, ncols)
    np.testing.assert_array_equal(np.load(tmp_path / "from.npy"), got_from)
    started = acc.copy()
    started[2:] = init
    np.testing.assert_array_equal(got_from, one_at_a_time(started, 2, w, 1, rows, 9, ncols))


@pytest.mark.parametrize("ncols", [1, 7, 8, 33, 64, 100, 256])
@pytest.mark.parametrize("n_rows", [0, 1, 5, 40])
def test_add_rows_from_equals_copy_then_add_rows(ncols, n_rows):
    """Starting the sums at ``init`` is copying ``init`` into the accumulator and adding the rows: bit for bit,
    and nothing outside the written stretch changes (also with no rows: the accumulator becomes ``init``)."""
    rng = np.random.default_rng(ncols * 100 + n_rows)
    n_in = 50
    w = rng.standard_normal(n_in * ncols).astype(np.float32)
    rows = (np.sort(rng.choice(n_in, n_rows, replace=False)) if n_rows else np.zeros(1)).astype(np.int32)
    init = rng.standard_normal(ncols + 5)
    expected = rng.standard_normal(ncols + 9)
    got = expected.copy()
    expected[3:3 + ncols] = init[2:2 + ncols]
    add_rows(expected, 3, w, 0, rows, n_rows, ncols, ncols)
    add_rows_from(got, 3, init, 2, w, 0, rows, n_rows, ncols, ncols)
    assert np.array_equal(expected, got)


@pytest.mark.parametrize("ncols", [8, 40, TILE, 256, 1024])
def test_padded_rows_read_only_their_columns(ncols):
    """Rows ``stride > ncols`` apart (padded with NaN here, which must never be read) give the sums of the
    unpadded rows, bit for bit, with and without a start vector."""
    from eventsim.network import padded_row

    rng = np.random.default_rng(ncols + 7)
    n_in, stride = 30, padded_row(ncols)
    assert stride >= ncols and (stride * 4) % 64 == 0 and (stride * 4 // 64) % 2 == 1
    dense = rng.standard_normal((n_in, ncols)).astype(np.float32)
    padded = np.full((n_in, stride), np.nan, np.float32)
    padded[:, :ncols] = dense
    rows = np.sort(rng.choice(n_in, 11, replace=False)).astype(np.int32)
    acc = rng.normal(size=ncols)
    init = rng.normal(size=ncols)
    want, got = acc.copy(), acc.copy()
    add_rows(want, 0, dense.ravel(), 0, rows, 11, ncols, ncols)
    add_rows(got, 0, padded.ravel(), 0, rows, 11, ncols, stride)
    np.testing.assert_array_equal(got, want)
    add_rows_from(want, 0, init, 0, dense.ravel(), 0, rows, 11, ncols, ncols)
    add_rows_from(got, 0, init, 0, padded.ravel(), 0, rows, 11, ncols, stride)
    np.testing.assert_array_equal(got, want)
