"""Per-input buffers kept between inputs, and zeroed without holding the GIL.

One encoder input needs ~30 MB of flat buffers at the benchmark's size (node
values, per-step spike lists, membranes, ASR sums). Allocating and zeroing them
in Python cost ~1.5 ms per input, all of it under the GIL: with inputs on
several threads (:meth:`eventsim.encoder_engine.EncoderEngine.run_many`) the
threads queued for it at the start and end of every input. A
:class:`BufferPool` hands each run a :class:`Workspace` whose arrays grew to the
largest size asked so far, and :func:`zero` clears what a run needs cleared in
a Numba kernel that releases the GIL. Results never keep a view of a workspace:
everything an :class:`~eventsim.encoder_engine.EncoderResult` holds is computed
into fresh arrays before the workspace goes back.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

from eventsim import aligned

#: Workspaces a pool keeps when they come back (more concurrent runs than this allocate and drop theirs).
MAX_POOLED = 8


@njit(cache=True, nogil=True)
def zero(a):
    """``a[:] = 0`` for a 1-D array, without the GIL."""
    for i in range(a.shape[0]):
        a[i] = 0


class Workspace:
    """Named flat buffers on cache-line boundaries (:mod:`eventsim.aligned`), grown on demand, never shrunk."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def take(self, name: str, size: int, dtype=np.float64, zeroed: bool = False) -> np.ndarray:
        """The first ``size`` elements of buffer ``name`` (its old contents unless ``zeroed``)."""
        dtype = np.dtype(dtype)
        buf = self._arrays.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = aligned.empty(max(int(size), 1), dtype)
            self._arrays[name] = buf
        out = buf[:size]
        if zeroed:
            zero(out)
        return out


class BufferPool:
    """Workspaces for runs on any number of threads: each run takes one of its own and gives it back."""

    def __init__(self, max_pooled: int = MAX_POOLED) -> None:
        self._free: list[Workspace] = []
        self._lock = threading.Lock()
        self.max_pooled = max_pooled

    def acquire(self) -> Workspace:
        with self._lock:
            return self._free.pop() if self._free else Workspace()

    def release(self, ws: Workspace) -> None:
        with self._lock:
            if len(self._free) < self.max_pooled:
                self._free.append(ws)
