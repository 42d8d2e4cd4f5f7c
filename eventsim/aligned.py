"""Arrays that start on a cache-line boundary, for the buffers the kernels stream through.

numpy places a large array 16 bytes past a page boundary (what ``malloc``
returns), so a 64-byte vector load from it (eight float64: a LIF lane block, an
8-column accumulator tile) straddles two cache lines every time, and a 32-byte
load of eight float32 weights every other time. A split load costs two L1
accesses. Starting the weight tables and the per-input buffers on a line
boundary made the benchmark encoders 3.5-9 % faster per input (docs/performance.md),
and the layouts inside them (rows padded to whole lines, per-step copies a
whole number of lines apart) then stay aligned too.

The arrays are views into a slightly larger numpy buffer, which they keep alive.
"""

from __future__ import annotations

import numpy as np

#: Bytes per cache line on the CPUs the kernels target (x86-64, Arm Neoverse).
CACHE_LINE_BYTES = 64


def empty(shape, dtype=np.float64, align: int = CACHE_LINE_BYTES) -> np.ndarray:
    """Uninitialised C-contiguous array whose first element lies on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def zeros(shape, dtype=np.float64, align: int = CACHE_LINE_BYTES) -> np.ndarray:
    """:func:`empty`, filled with zeros."""
    out = empty(shape, dtype, align)
    out.fill(0)
    return out


def copy(a: np.ndarray, dtype=None, align: int = CACHE_LINE_BYTES) -> np.ndarray:
    """C-contiguous copy of ``a`` (cast to ``dtype`` if given) on an ``align``-byte boundary."""
    a = np.asarray(a)
    out = empty(a.shape, a.dtype if dtype is None else dtype, align)
    out[...] = a
    return out


def is_aligned(a: np.ndarray, align: int = CACHE_LINE_BYTES) -> bool:
    """Whether ``a``'s first element lies on an ``align``-byte boundary (an empty array has none: true)."""
    return a.size == 0 or a.ctypes.data % align == 0
