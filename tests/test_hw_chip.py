"""Chip files: presets load, round-trip, and every bad file is one line naming the field and the file."""

from __future__ import annotations

import pytest

from eventsim.errors import EventsimError
from hw.chip import list_presets, load_chip


def test_presets_load_with_published_figures():
    s2 = load_chip("spinnaker2")
    assert s2.pe.count == 152
    assert s2.pe.sram_bytes_per_pe == 128 * 1024 and s2.pe.sram_banks_per_pe == 4
    assert s2.noc.pes_per_router == 4
    assert s2.noc.routers * s2.noc.pes_per_router >= 152
    assert any("2312.09084" in src for src in s2.sources)
    c45 = load_chip("cmos45")
    assert c45.energy.energy_pj_per_mac == 4.6
    assert c45.energy.energy_pj_per_ac == 0.9
    assert c45.energy.static_power_w_chip == 0.0
    assert set(list_presets()) >= {"cmos45", "spinnaker2"}


@pytest.mark.parametrize("name", ["cmos45", "spinnaker2"])
def test_preset_round_trip(tmp_path, name):
    chip = load_chip(name)
    path = tmp_path / f"{name}.toml"
    path.write_text(chip.to_toml())
    assert load_chip(path) == chip
    assert load_chip(str(path)).to_dict() == chip.to_dict()


def test_unknown_preset_lists_presets():
    with pytest.raises(EventsimError) as err:
        load_chip("loihi9")
    msg = str(err.value)
    assert "loihi9" in msg and "cmos45" in msg and "spinnaker2" in msg and "\n" not in msg


def _variant(tmp_path, old: str, new: str):
    text = load_chip("spinnaker2").to_toml()
    assert old in text
    path = tmp_path / "chip.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("clock_mhz = 200.0\n", "", "missing field [pe] clock_mhz"),
        ("clock_mhz = 200.0", 'clock_mhz = "fast"', "field [pe] clock_mhz must be a number, got 'fast'"),
        ("count = 152", "count = 152.5", "field [pe] count must be an integer"),
        ("router_latency_ns = 10.0", "router_latency_ns = 10.0\nrouter_delay = 3", "unknown field [noc] router_delay"),
        ("[dram]", "[drams]", "unknown top-level field 'drams'"),
        ("energy_pj_per_mac = 0.0", "energy_pj_per_mac = -1.0", "[energy] energy_pj_per_mac must not be negative"),
        ("mesh_columns = 8", "mesh_columns = 2", "[pe] count (152) exceeds the mesh"),
        ("link_bandwidth_bytes_per_ns = 4.8", "link_bandwidth_bytes_per_ns = 0.0",
         "[noc] link_bandwidth_bytes_per_ns must be positive"),
        ('name = "spinnaker2"', "name = 3", "field name must be a string"),
    ],
)
def test_bad_chip_file_is_one_line_naming_field_and_file(tmp_path, old, new, expected):
    path = _variant(tmp_path, old, new)
    with pytest.raises(EventsimError) as err:
        load_chip(path)
    msg = str(err.value)
    assert expected in msg
    assert str(path) in msg
    assert "\n" not in msg


def test_missing_table_and_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "chip.toml"
    text = load_chip("cmos45").to_toml()
    path.write_text(text[: text.index("[energy]")])
    with pytest.raises(EventsimError, match=r"chip\.toml: missing table \[energy\]"):
        load_chip(path)
    path.write_text("name = \n")
    with pytest.raises(EventsimError, match="not a valid TOML file"):
        load_chip(path)
    with pytest.raises(EventsimError, match="no such chip file"):
        load_chip(tmp_path / "absent.toml")
