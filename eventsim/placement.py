"""Which neurons of which population live on which processing element (PE).

A placement is data: for each population, the neuron boundaries of its PEs.
PEs get global ids in population order. The engine only needs the boundaries;
the chip model (``hw.mapping``) decides them from SRAM sizes and adds where each
PE sits on the chip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eventsim.errors import EventsimError
from eventsim.manifest import Manifest

DEFAULT_NEURONS_PER_PE = 256


@dataclass(frozen=True)
class PopulationSlice:
    """One PE's share of one population: neurons ``[start, stop)``."""

    pe: int
    population: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Placement:
    """Neuron boundaries per population, e.g. ``{"layers.0": (0, 256, 512, 600)}``.

    Populations are the manifest's layers in order; the embedding's neurons are its
    output dimensions, the readout's are the vocabulary's logits.
    """

    bounds: dict[str, tuple[int, ...]]

    @property
    def populations(self) -> tuple[str, ...]:
        return tuple(self.bounds)

    @property
    def pe_count(self) -> int:
        return sum(len(b) - 1 for b in self.bounds.values())

    def slices(self) -> list[PopulationSlice]:
        out: list[PopulationSlice] = []
        for name, b in self.bounds.items():
            for lo, hi in zip(b[:-1], b[1:]):
                out.append(PopulationSlice(len(out), name, lo, hi))
        return out

    def pes_of(self, population: str) -> range:
        first = 0
        for name, b in self.bounds.items():
            if name == population:
                return range(first, first + len(b) - 1)
            first += len(b) - 1
        raise KeyError(population)

    def pe_population_index(self) -> np.ndarray:
        """For each PE, the index of its population in :attr:`populations`."""
        return np.array(
            [i for i, b in enumerate(self.bounds.values()) for _ in range(len(b) - 1)], dtype=np.int64
        )

    def validate(self, manifest: Manifest) -> None:
        sizes = population_sizes(manifest)
        if tuple(self.bounds) != tuple(sizes):
            raise EventsimError(f"placement names populations {list(self.bounds)}, the model has {list(sizes)}")
        for name, b in self.bounds.items():
            if len(b) < 2 or b[0] != 0 or b[-1] != sizes[name] or any(x >= y for x, y in zip(b[:-1], b[1:])):
                raise EventsimError(
                    f"placement of {name!r}: boundaries {list(b)} must rise strictly from 0 to {sizes[name]}"
                )


def population_sizes(manifest: Manifest) -> dict[str, int]:
    """Neurons per population: embedding dims, hidden units, readout logits."""
    return {spec.name: spec.output_size for spec in manifest.layers}


def even_placement(manifest: Manifest, neurons_per_pe: int = DEFAULT_NEURONS_PER_PE) -> Placement:
    """Split every population into PEs of at most ``neurons_per_pe`` neurons, as evenly as possible."""
    if neurons_per_pe <= 0:
        raise EventsimError(f"neurons per PE must be positive, got {neurons_per_pe}")
    bounds: dict[str, tuple[int, ...]] = {}
    for name, n in population_sizes(manifest).items():
        parts = -(-n // neurons_per_pe)
        bounds[name] = tuple(int(x) for x in np.linspace(0, n, parts + 1).round().astype(np.int64))
    return Placement(bounds)
