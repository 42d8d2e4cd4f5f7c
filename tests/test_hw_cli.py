"""``eventsim simulate --chip``: chip figures in the outputs, and one-line errors for bad chips and overflow."""

from __future__ import annotations

import csv
import json

import pytest

from eventsim.cli import main
from hw.chip import load_chip


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("eventsim: error: ")
    return err[0]


@pytest.mark.parametrize("timing", ["analytic", "simpy"])
def test_simulate_on_a_chip_writes_chip_figures(small_egru, tmp_path, capsys, timing):
    out = tmp_path / timing
    args = ["simulate", small_egru, "--text", "b c d e", "--chip", "spinnaker2", "--timing", timing,
            "--gpu-watts", "60", "--gpu-seconds-per-token", "0.01", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"chip spinnaker2 ({timing} timing)" in printed
    summary = json.loads((out / "summary.json").read_text())
    chip = summary["chip"]
    assert chip["timing"] == timing and chip["tokens"] == summary["tokens"]
    assert chip["gpu_comparison"]["gpu_energy_j_per_token"] == pytest.approx(0.6)
    rows = list(csv.DictReader(open(out / "per_token.csv")))
    assert sum(float(r["chip_energy_pj"]) for r in rows) == pytest.approx(chip["energy_j_total"] * 1e12)
    pe_rows = list(csv.DictReader(open(out / "chip_pe_trace.csv")))
    assert len(pe_rows) == summary["tokens"] * chip["pes_used"]


def test_bad_chip_file_unknown_preset_and_overflow_are_one_line(small_egru, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(load_chip("spinnaker2").to_toml().replace("clock_mhz = 200.0", 'clock_mhz = "fast"'))
    base = ["simulate", small_egru, "--text", "b c", "--no-progress"]
    assert main(base + ["--chip", str(bad)]) == 2
    line = _error_line(capsys)
    assert "clock_mhz" in line and str(bad) in line
    assert main(base + ["--chip", "truenorth"]) == 2
    assert "presets are cmos45, spinnaker2" in _error_line(capsys)
    small = tmp_path / "small.toml"
    small.write_text(load_chip("spinnaker2").to_toml().replace("sram_bytes_per_pe = 131072", "sram_bytes_per_pe = 20000"))
    assert main(base + ["--chip", str(small), "--pes", "5"]) == 2
    line = _error_line(capsys)
    assert "does not fit" in line and "PE " in line and "overflow" in line
