"""Smoke runs of the encoder benchmark scripts (``--quick``): they run and print their tables.

Timings are not checked (that is the script's job, run by hand); only that every
column is produced and that the SpikingJelly network, when it can be imported,
spikes at the engine's rate (float32 against float64: the same network).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_encoder_quick_runs():
    pytest.importorskip("torch")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "benchmarks/bench_encoder.py", "--quick", "--repeats", "1"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "ACs+MACs" in out and "R^2" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*spikingbert\s+\d+%\s+\d", line)]
    assert len(rows) == 4  # 2 sparsities x 2 threshold scales
    for row in rows:
        rate, sj_rate = row[3], row[4]
        assert float(rate.rstrip("%")) > 0
        if sj_rate != "nan%":
            assert abs(float(rate.rstrip("%")) - float(sj_rate.rstrip("%"))) < 1.0


@pytest.mark.slow
def test_bench_encoder_kernels_quick_runs():
    """Each new inner loop is checked against the loop it replaced (bit for bit) before it is timed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "benchmarks/bench_encoder_kernels.py", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert len(re.findall(r"per_ac [\d.]+ +tiles [\d.]+ +same_row [\d.]+", out)) == 3
    for what in ("LIF step", "LayerNorm", "GELU"):
        assert what in out
