"""Read and write the one-file checkpoint (safetensors + JSON manifest).

Nothing in a checkpoint is executed: safetensors holds raw arrays and a string
map. Every tensor the manifest implies is checked for presence, shape, dtype and
finiteness; the first problem found is raised as one line naming file and tensor.

Pruned weights may be stored dense (with their zeros) or as COO triplets,
``<tensor>.indices`` (int32/int64 ``[ndim, nnz]``) and ``<tensor>.values``
(``[nnz]``), whichever is smaller; the loader returns dense arrays either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eventsim.errors import EventsimError
from eventsim.manifest import METADATA_KEY, Manifest

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class Checkpoint:
    """A validated model: manifest plus dense float32 tensors by name."""

    path: str
    manifest: Manifest
    tensors: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]


def save_checkpoint(
    path: str | os.PathLike,
    manifest: Manifest,
    tensors: dict[str, np.ndarray],
    sparse: bool | None = None,
) -> None:
    """Write ``tensors`` and ``manifest`` to one safetensors file.

    ``sparse=None`` stores each weight matrix as COO triplets when that is
    smaller than dense; ``True``/``False`` force one form.
    """
    from safetensors.numpy import save_file

    manifest.validate(str(path))
    shapes = manifest.tensor_shapes()
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise EventsimError(f"{path}: cannot save, tensors missing: {missing}")
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        arr = np.ascontiguousarray(np.asarray(tensors[name], dtype=np.float32))
        if arr.shape != shape:
            raise EventsimError(f"{path}: cannot save {name}: shape {arr.shape}, manifest implies {shape}")
        nnz = int(np.count_nonzero(arr))
        # COO costs (ndim * 4 + 4) bytes per non-zero against 4 bytes per entry dense.
        use_sparse = sparse if sparse is not None else (arr.ndim == 2 and nnz * (arr.ndim * 4 + 4) < arr.size * 4)
        if use_sparse and arr.ndim >= 1:
            idx = np.nonzero(arr)
            out[f"{name}.indices"] = np.ascontiguousarray(np.stack(idx).astype(np.int32))
            out[f"{name}.values"] = np.ascontiguousarray(arr[idx])
        else:
            out[name] = arr
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={METADATA_KEY: manifest.to_json()})


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Only the manifest (cheap: reads the header)."""
    manifest, _ = _open(path, read_tensors=False)
    return manifest


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate a checkpoint; raises :class:`EventsimError` on any problem."""
    manifest, raw = _open(path, read_tensors=True)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in manifest.tensor_shapes().items():
        if name in raw:
            arr = raw[name]
            _check_dtype(path, name, arr)
            if arr.shape != shape:
                raise EventsimError(f"{path}: tensor {name} has shape {list(arr.shape)}, manifest implies {list(shape)}")
            arr = arr.astype(np.float32, copy=False)
        elif f"{name}.indices" in raw and f"{name}.values" in raw:
            arr = _densify(path, name, shape, raw[f"{name}.indices"], raw[f"{name}.values"])
        else:
            raise EventsimError(f"{path}: tensor {name} is missing")
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise EventsimError(f"{path}: tensor {name} has {bad} non-finite values (NaN or inf)")
        tensors[name] = np.ascontiguousarray(arr)
    for spec in manifest.layers:
        if spec.kind == "egru":
            thr = tensors[f"{spec.name}.thr"]
            if np.any(thr <= 0):
                raise EventsimError(
                    f"{path}: tensor {spec.name}.thr has {int(np.sum(thr <= 0))} non-positive thresholds (min {thr.min():g})"
                )
    return Checkpoint(path=str(path), manifest=manifest, tensors=tensors)


def _open(path: str | os.PathLike, read_tensors: bool) -> tuple[Manifest, dict[str, np.ndarray]]:
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        raise EventsimError(f"{path}: no such checkpoint file")
    if not p.is_file():
        raise EventsimError(f"{path}: is not a file")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8:
        raise EventsimError(f"{path}: not a safetensors file ({size} bytes, too short for a header)")
    header_len = int.from_bytes(head, "little")
    if header_len <= 0 or header_len > size - 8 or header_len > 100_000_000:
        raise EventsimError(f"{path}: not a safetensors file (header length {header_len} does not fit a {size}-byte file)")
    try:
        with safe_open(str(p), framework="numpy") as f:
            metadata = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()} if read_tensors else {}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EventsimError(f"{path}: not a valid safetensors file ({msg})") from None
    if METADATA_KEY not in metadata:
        raise EventsimError(f"{path}: safetensors file has no eventsim manifest (metadata key {METADATA_KEY!r})")
    manifest = Manifest.from_json(metadata[METADATA_KEY], where=str(path))
    return manifest, raw


def _check_dtype(path, name: str, arr: np.ndarray) -> None:
    if arr.dtype.type not in FLOAT_DTYPES:
        raise EventsimError(f"{path}: tensor {name} has dtype {arr.dtype}, expected a float type")


def _densify(path, name: str, shape: tuple[int, ...], indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    _check_dtype(path, f"{name}.values", values)
    if indices.dtype.kind not in "iu":
        raise EventsimError(f"{path}: tensor {name}.indices has dtype {indices.dtype}, expected integers")
    if indices.ndim != 2 or indices.shape[0] != len(shape) or values.shape != (indices.shape[1],):
        raise EventsimError(
            f"{path}: sparse tensor {name} has indices {list(indices.shape)} and values {list(values.shape)}, "
            f"expected [{len(shape)}, nnz] and [nnz]"
        )
    for axis, n in enumerate(shape):
        if indices.shape[1] and (indices[axis].min() < 0 or indices[axis].max() >= n):
            raise EventsimError(f"{path}: sparse tensor {name} has indices out of range on axis {axis} (size {n})")
    dense = np.zeros(shape, dtype=np.float32)
    dense[tuple(indices.astype(np.int64))] = values.astype(np.float32)
    return dense
