"""Smoke runs of the encoder benchmark scripts (``--quick``): they run and print their tables.

Timings are not checked (that is the script's job, run by hand); only that every
column is produced and that the SpikingJelly network, when it can be imported,
spikes at the engine's rate (float32 against float64: the same network).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("cores,warm", [("1", "0"), ("2", "1")])
def test_bench_encoder_quick_runs(cores, warm):
    """With --cores 2 every tool takes a batch of two inputs (the engine on two threads, torch and SpikingJelly as one
    [2, N] tensor): SpikingJelly's rate, the batch's mean, still meets the engine's. --warm-runs is stated."""
    pytest.importorskip("torch")
    if int(cores) > (os.cpu_count() or 1):
        pytest.skip("needs two CPUs")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "benchmarks/bench_encoder.py", "--quick", "--repeats", "1", "--cores",
                           cores, "--warm-runs", warm], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "ACs+MACs" in out and "R^2" in out and f"{cores} input(s) per call on {cores} core(s)" in out
    assert f"each after {warm} untimed run(s) of the same tool" in out
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


def test_profile_encoder_demangles_and_parses():
    """The profile's two text steps: Numba's mangled names, and perf's report lines summed per function."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import profile_encoder as pe
    finally:
        sys.path.pop(0)
    mangled = ("_ZN8eventsim15encoder_kernels16_csr_from_spikesB3v19B38c8tJTIeFIjxB2IKSgI4CrvQClQZ6FczSBAA_3dE"
               "x5ArrayIxLi2E1C7mutable7alignedE")
    assert pe.demangle(mangled) == "eventsim.encoder_kernels._csr_from_spikes"
    assert pe.demangle("_ZN8eventsim9row_tiles8add_rowsB2v3E") == "eventsim.row_tiles.add_rows"
    assert pe.demangle("_PyEval_EvalFrameDefault") == "_PyEval_EvalFrameDefault"
    report = ("# comment\n"
              "    60.50%  [.] _ZN8eventsim9row_tiles8add_rowsB2v3E5Array\n"
              "     1.25%  [.] _ZN8eventsim9row_tiles8add_rowsB2v4E5Array\n"
              "     2.00%  [.] _PyEval_EvalFrameDefault\n"
              "     0.64%  [k] exc_page_fault\n")
    shares = pe.parse_report(report)
    assert shares == {"eventsim.row_tiles.add_rows": 61.75, "_PyEval_EvalFrameDefault": 2.0}


@pytest.mark.slow
def test_profile_encoder_quick_runs_or_says_why():
    """With perf: a table of the engine's functions (add_rows and lif_step among them) and the JSON; without: one
    line and exit 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    missing = subprocess.run([sys.executable, "benchmarks/profile_encoder.py", "--quick", "--perf", "no-such-perf"],
                             cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("profile_encoder: 'no-such-perf' not found: install perf (linux-tools) "
                                      "to profile")
    bad = subprocess.run([sys.executable, "benchmarks/profile_encoder.py", "--quick", "--hidden", "0"],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "profile_encoder: --hidden must be > 0, got 0"
    if shutil.which("perf") is None:
        pytest.skip("perf is not installed here")
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"profile-{os.getpid()}.json"
    proc = subprocess.run([sys.executable, "benchmarks/profile_encoder.py", "--quick", "--seconds", "2",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode == 2 and "perf record failed" in proc.stderr:
        pytest.skip(f"perf cannot sample here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "eventsim.row_tiles.add_rows" in proc.stdout and "eventsim.encoder_kernels.lif_step" in proc.stdout
    table = json.loads(out.read_text())
    out.unlink()
    shares = [row["share"] for row in table["functions"]]
    assert 0.5 < sum(shares) <= 1.0 + 1e-9 and shares == sorted(shares, reverse=True)
    assert table["ops"] > 0 and 0 < table["spike_rate"] < 1


def _ab_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ab_encoder", ROOT / "benchmarks" / "ab_encoder.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling encoder_sizes
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    return mod


def test_ab_encoder_names_the_fields_that_differ():
    from types import SimpleNamespace

    import numpy as np

    def result(logit, acs):
        return SimpleNamespace(logits=np.array([[logit, 0.0]]), asr_mean=np.zeros((1, 1)),
                               spike_fraction=np.zeros((1, 1)), asr_final={"b0.k": np.zeros((2, 3))},
                               counts={"acs": np.array([acs])}, node_counts={"acs": np.array([[acs]])})

    same = _ab_module().same_results
    assert same(result(1.0, 5), result(1.0, 5)) == []
    assert same(result(1.0, 5), result(1.0 + 1e-16 * 2, 6)) == ["logits", "counts[acs]", "node_counts[acs]"]


@pytest.mark.slow
def test_ab_encoder_quick_runs_or_says_why():
    """Against HEAD the two engines are the same code: identical results; an unknown revision is one line, exit 2."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and the repository's history")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run([sys.executable, "benchmarks/ab_encoder.py", "--quick", "--baseline", "no-such-rev"],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("ab_encoder: --baseline 'no-such-rev': git archive failed")
    proc = subprocess.run([sys.executable, "benchmarks/ab_encoder.py", "--quick", "--repeats", "2"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "results identical: yes" in proc.stdout
    assert re.search(r"baseline / work tree per pair: median [\d.]+x \(quartiles [\d.]+-[\d.]+\)", proc.stdout)
