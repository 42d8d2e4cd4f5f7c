"""Chip model: chips as data, mapping onto PEs, time and energy of an event trace.

Public entry points::

    chip = load_chip("spinnaker2")                        # or a path to a chip .toml
    placement, mapping = map_model(checkpoint, chip, pes="auto")
    trace = simulate_tokens(checkpoint, ids, placement).trace   # eventsim.engine
    report = evaluate(trace, chip, mapping, timing="analytic")  # or "simpy"
    report.records(); report.summary(gpu_watts=..., gpu_seconds_per_token=...)
"""

from hw.chip import Chip, list_presets, load_chip
from hw.evaluate import evaluate
from hw.mapping import MappingReport, check_placement, map_model, pes_by_sparsity
from hw.report import ChipReport, gpu_comparison

__all__ = [
    "Chip", "ChipReport", "MappingReport", "check_placement", "evaluate", "gpu_comparison", "list_presets",
    "load_chip", "map_model", "pes_by_sparsity",
]
