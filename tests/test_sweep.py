"""``eventsim sweep`` and its results file: the miniature sweep, exact MAC counts, resume, damage.

The miniature sweep runs tiny trained LSTM and EGRU models (see ``test_prune``)
at three pruning levels over 300 tokens. The MAC checks use only the torch
model of each checkpoint and its weights:

- LSTM (dense activations): every input and every previous output is non-zero,
  so token 0 costs nnz(kernels) and every later token nnz(kernels) +
  nnz(recurrent kernels): total = T * nnz(K) + (T - 1) * nnz(R).
- EGRU: per token and layer, the kernel rows of the non-zero inputs plus the
  recurrent-kernel rows of the layer's own non-zero previous outputs.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("datasets")

from test_prune import LEVELS, tiny_pruned_models  # noqa: E402

from analysis.plots import ENERGY_FIGURE, FIGURES, FORMATS, TABLE_STEM, sweep_series  # noqa: E402
from analysis.results import FORMAT_NAME, ResultsWriter, read_results  # noqa: E402
from eventsim.cli import main  # noqa: E402
from eventsim.text import encode, tokenize  # noqa: E402
from training.lm import load_lm  # noqa: E402

TOKENS = 300
N_POINTS = 2 * len(LEVELS)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return tiny_pruned_models(tmp_path_factory.getbasetemp() / "tiny-sweep-models")


def checkpoints(tiny) -> list[str]:
    return [str(p) for cell in ("lstm", "egru") for p in tiny["levels"][cell].values()]


def sweep_argv(tiny, results, *extra) -> list[str]:
    return ["sweep", *checkpoints(tiny), "--corpus", str(tiny["corpus"]), "--tokens", str(TOKENS),
            "--results", str(results), "--no-progress", *extra]


@pytest.fixture(scope="session")
def full_results(tiny, tmp_path_factory):
    """The miniature sweep, run on two local worker processes."""
    results = tmp_path_factory.mktemp("sweep") / "results.jsonl"
    assert main(sweep_argv(tiny, results, "--workers", "2")) == 0
    return results


def key_ids(path) -> list[str]:
    lines = path.read_text().splitlines()
    return [json.loads(line)["key_id"] for line in lines[1:]]


def held_out_ids(tiny, vocabulary) -> np.ndarray:
    words = tokenize(tiny["corpus"].read_text())[:TOKENS]
    return np.array(encode(words, vocabulary))


# ---------------------------------------------------------------- the miniature sweep


def test_miniature_sweep_writes_one_point_per_checkpoint(full_results):
    lines = full_results.read_text().splitlines()
    assert json.loads(lines[0])["format"] == FORMAT_NAME
    ids = key_ids(full_results)
    assert len(ids) == N_POINTS == len(set(ids))
    for point in read_results(full_results).points:
        assert point["tokens"] == TOKENS
        assert point["cell"] in ("lstm", "egru")
        assert point["level_percent"] in LEVELS
        assert point["weight_sparsity"] == pytest.approx(point["level_percent"] / 100, abs=0.002)
        assert set(point["weight_sparsity_per_tensor"]) == {f"layers.{i}.{p}" for i in (0, 1)
                                                            for p in ("kernel", "recurrent_kernel")}
        assert point["perplexity"] > 1 and len(point["layers"]) == 3  # two recurrent layers and the readout
        assert point["mac_reduction"] == pytest.approx(point["dense_macs"] / point["effective_macs"])


def test_macs_fall_with_sparsity_and_egru_is_below_lstm_at_every_level(full_results):
    series = {s.cell: s for s in sweep_series(read_results(full_results).points)}
    assert set(series) == {"lstm", "egru"}
    for s in series.values():
        macs = s.column("effective_macs_per_token")
        assert [p["level_percent"] for p in s.points] == list(LEVELS)
        assert all(a > b for a, b in zip(macs, macs[1:])), (s.cell, macs)
    for lstm, egru in zip(series["lstm"].points, series["egru"].points):
        assert lstm["level_percent"] == egru["level_percent"]
        assert egru["effective_macs_per_token"] < lstm["effective_macs_per_token"]
        assert egru["activity"] < 1.0 == lstm["activity"]


def test_lstm_macs_equal_its_nonzero_weights_at_every_level(tiny, full_results):
    points = [p for p in read_results(full_results).points if p["cell"] == "lstm"]
    assert len(points) == len(LEVELS)
    for point in points:
        model, manifest = load_lm(point["checkpoint"], dtype=torch.float64)
        run = model.run_tokens(held_out_ids(tiny, manifest.vocabulary))
        assert all(np.all(out != 0) for out in run.layer_outputs)  # dense activations indeed
        nnz_k = sum(int((layer.kernel != 0).sum()) for layer in model.layers)
        nnz_r = sum(int((layer.recurrent_kernel != 0).sum()) for layer in model.layers)
        assert point["effective_macs"] == TOKENS * nnz_k + (TOKENS - 1) * nnz_r
        assert point["weight_nonzeros"] == nnz_k + nnz_r


def test_egru_macs_equal_the_sum_over_active_inputs_at_every_level(tiny, full_results):
    points = [p for p in read_results(full_results).points if p["cell"] == "egru"]
    assert len(points) == len(LEVELS)
    for point in points:
        model, manifest = load_lm(point["checkpoint"], dtype=torch.float64)
        ids = held_out_ids(tiny, manifest.vocabulary)
        run = model.run_tokens(ids)
        emb = model.embedding.weight.detach().numpy()
        total = 0
        for i, layer in enumerate(model.layers):
            nz_kernel = (layer.kernel.detach().numpy() != 0).sum(axis=1)
            nz_recurrent = (layer.recurrent_kernel.detach().numpy() != 0).sum(axis=1)
            inputs = emb[ids] if i == 0 else run.layer_outputs[i - 1]
            prev = np.vstack([np.zeros((1, nz_recurrent.size)), run.layer_outputs[i][:-1]])
            layer_macs = int(((inputs != 0) @ nz_kernel).sum() + ((prev != 0) @ nz_recurrent).sum())
            assert point["layers"][i]["effective_macs"] == layer_macs
            events = int(np.count_nonzero(run.layer_outputs[i]))
            assert point["layers"][i]["activity"] == pytest.approx(events / (TOKENS * layer.hidden_size))
            total += layer_macs
        assert point["effective_macs"] == total


def test_plot_writes_every_figure_and_the_table(full_results, tmp_path):
    out = tmp_path / "plots"
    assert main(["plot", "sweep", str(full_results), "--out", str(out)]) == 0
    for stem in FIGURES:
        for ext in FORMATS:
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    assert not (out / f"{ENERGY_FIGURE}.png").exists()  # no chip points
    rows = (out / f"{TABLE_STEM}.csv").read_text().splitlines()
    assert len(rows) == 1 + len(LEVELS)
    md = (out / f"{TABLE_STEM}.md").read_text()
    assert "LSTM MACs/token" in md and "EGRU test PPL" in md


# ---------------------------------------------------------------- resume


def test_rerun_skips_every_finished_point(tiny, full_results, capsys):
    before = full_results.read_bytes()
    assert main(sweep_argv(tiny, full_results, "--workers", "1")) == 0
    assert full_results.read_bytes() == before
    assert f"{N_POINTS} already in" in capsys.readouterr().err


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, nothing catches it."""


def run_until_crash(monkeypatch, argv, crash_after: int, mid_write: bool = False) -> None:
    real_write = ResultsWriter._write
    calls = {"points": 0}

    def write(self, line: str) -> None:
        if line.startswith('{"key"'):
            if calls["points"] == crash_after:
                if mid_write:
                    real_write(self, line[: len(line) // 2])
                raise Crash
            calls["points"] += 1
        real_write(self, line)

    with monkeypatch.context() as m:
        m.setattr(ResultsWriter, "_write", write)
        with pytest.raises(Crash):
            main(argv)


@pytest.mark.parametrize("crash_after", [0, 2, N_POINTS - 1])
def test_a_sweep_killed_after_k_points_resumes_without_loss(tiny, full_results, tmp_path, monkeypatch, crash_after):
    results = tmp_path / "results.jsonl"
    argv = sweep_argv(tiny, results, "--workers", "1")
    run_until_crash(monkeypatch, argv, crash_after)
    assert len(key_ids(results)) == crash_after
    assert main(argv) == 0
    ids = key_ids(results)
    assert len(ids) == len(set(ids)) == N_POINTS
    assert set(ids) == set(key_ids(full_results))


def test_a_line_torn_by_a_crash_is_set_aside_and_its_point_rerun(tiny, full_results, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results.jsonl"
    argv = sweep_argv(tiny, results, "--workers", "1")
    run_until_crash(monkeypatch, argv, 3, mid_write=True)
    torn = results.read_bytes().split(b"\n")[-1]
    assert torn and not results.read_bytes().endswith(b"\n")
    assert len(read_results(results).points) == 3  # readers skip the torn tail
    assert main(argv) == 0
    assert "cut off by a crash" in capsys.readouterr().err
    assert (tmp_path / "results.jsonl.torn").read_bytes() == torn + b"\n"
    ids = key_ids(results)  # every line parses: the torn bytes are gone from the file
    assert len(ids) == len(set(ids)) == N_POINTS and set(ids) == set(key_ids(full_results))


KILLER = """
import os, signal, sys
from analysis.results import ResultsWriter
from eventsim.cli import main

crash_after, mid_write = int(sys.argv[1]), sys.argv[2] == "mid"
real_write, done = ResultsWriter._write, [0]

def write(self, line):
    if line.startswith('{"key"'):
        if done[0] == crash_after:
            if mid_write:
                real_write(self, line[: len(line) // 2])
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind runs
        done[0] += 1
    real_write(self, line)

ResultsWriter._write = write
main(sys.argv[3:])
"""


@pytest.mark.parametrize("mode", ["between", "mid"])
def test_a_sweep_process_killed_by_sigkill_resumes_without_loss(tiny, full_results, tmp_path, mode):
    import signal
    import subprocess
    from pathlib import Path

    results = tmp_path / "results.jsonl"
    argv = sweep_argv(tiny, results, "--workers", "1")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", KILLER, "3", mode, *argv], cwd=repo, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert len(read_results(results).points) == 3
    assert main(argv) == 0
    ids = key_ids(results)
    assert len(ids) == len(set(ids)) == N_POINTS and set(ids) == set(key_ids(full_results))
    assert (tmp_path / "results.jsonl.torn").exists() == (mode == "mid")


def test_a_complete_last_line_missing_its_newline_is_kept(tiny, full_results, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_bytes(full_results.read_bytes().rstrip(b"\n"))
    assert main(sweep_argv(tiny, results, "--workers", "1")) == 0
    assert f"{N_POINTS} already in" in capsys.readouterr().err
    assert results.read_bytes() == full_results.read_bytes()


# ---------------------------------------------------------------- damaged and foreign files


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"level,perplexity\n0,123.4\n", "not an eventsim sweep results file"),
        (b'{"format": "something-else", "format_version": 1}\n', "not an eventsim sweep results file"),
        (b'{"format": "eventsim-sweep-results", "format_version": 99}\n', "newer than this eventsim"),
        (b"\x00\xff\x10binary", "not an eventsim sweep results file"),
    ],
)
def test_foreign_results_file_is_refused_in_one_line_and_left_alone(tiny, tmp_path, capsys, content, message):
    results = tmp_path / "results.jsonl"
    results.write_bytes(content)
    assert main(sweep_argv(tiny, results, "--workers", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert results.read_bytes() == content
    assert main(["plot", "sweep", str(results), "--out", str(tmp_path / "p")]) == 2


def test_corrupt_line_in_the_middle_is_refused_and_left_alone(tiny, full_results, tmp_path, capsys):
    lines = full_results.read_bytes().split(b"\n")
    lines[2] = lines[2][:40]  # a damaged record that is not the last line
    damaged = b"\n".join(lines)
    results = tmp_path / "results.jsonl"
    results.write_bytes(damaged)
    assert main(sweep_argv(tiny, results, "--workers", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 3 is not a complete result record" in err
    assert results.read_bytes() == damaged
    # A record edited by hand (its key no longer matches key_id) is damage too.
    edited = full_results.read_text().replace('"tokens":300,"chip"', '"tokens":301,"chip"', 1)
    results.write_text(edited)
    assert main(sweep_argv(tiny, results, "--workers", "1")) == 2
    assert results.read_text() == edited


def test_a_missing_checkpoint_stops_the_sweep_before_any_work(tiny, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    argv = sweep_argv(tiny, results, "--workers", "1")
    argv.insert(2, str(tmp_path / "missing.safetensors"))
    assert main(argv) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    assert not results.exists()


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path):
        with pytest.raises(Exception, match="another sweep is writing"):
            ResultsWriter(path).open()


# ---------------------------------------------------------------- Dask


def test_dask_cluster_gives_the_same_points(tiny, full_results, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    results = tmp_path / "results.jsonl"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(sweep_argv(tiny, results, "--scheduler", cluster.scheduler_address)) == 0
    local = {p["key_id"]: p for p in read_results(full_results).points}
    remote = {p["key_id"]: p for p in read_results(results).points}
    assert set(remote) == set(local)
    for kid, p in remote.items():
        for field in ("effective_macs", "dense_macs", "perplexity", "activity", "weight_sparsity"):
            assert p[field] == local[kid][field], field


def test_unreachable_scheduler_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("analysis.sweep.DASK_CONNECT_TIMEOUT_S", 2)
    argv = sweep_argv(tiny, tmp_path / "r.jsonl", "--scheduler", "tcp://127.0.0.1:9")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Dask scheduler" in err
    assert not (tmp_path / "r.jsonl").exists()


# ---------------------------------------------------------------- chip seam


@pytest.fixture()
def fake_chip_model(monkeypatch):
    """``hw.cli_support`` as ``eventsim simulate --chip`` uses it: 2 pJ per MAC on chip 'a', 5 on 'b'."""
    module = types.ModuleType("hw.cli_support")
    pj_per_mac = {"a": 2.0, "b": 5.0}

    def prepare_chip(checkpoint, options):
        return options.chip, None, {"chip": options.chip}

    def price_trace(chip, mapping, trace, options):
        macs = int(trace.macs.sum())
        steps = trace.macs.shape[0]
        return {"chip": chip, "energy_pj_per_token": pj_per_mac[chip] * macs / steps}, [], lambda out: []

    module.prepare_chip, module.price_trace = prepare_chip, price_trace
    monkeypatch.setitem(sys.modules, "hw.cli_support", module)
    return pj_per_mac


def test_chip_points_record_energy_and_get_their_figure(tiny, tmp_path, fake_chip_model):
    results = tmp_path / "results.jsonl"
    assert main(sweep_argv(tiny, results, "--workers", "1", "--chip", "a", "--chip", "b")) == 0
    points = read_results(results).points
    assert len(points) == 2 * N_POINTS
    for p in points:
        total_macs = p["effective_macs"] + p["readout_effective_macs_per_token"] * p["tokens"]
        assert p["energy_pj_per_token"] == pytest.approx(fake_chip_model[p["chip"]] * total_macs / p["tokens"])
    out = tmp_path / "plots"
    assert main(["plot", "sweep", str(results), "--out", str(out)]) == 0
    assert (out / f"{ENERGY_FIGURE}.png").exists() and (out / f"{ENERGY_FIGURE}.pdf").exists()
    assert "nJ/token (a)" in (out / f"{TABLE_STEM}.md").read_text()


def test_the_real_chip_model_prices_each_level(tiny, tmp_path):
    pytest.importorskip("hw.cli_support")
    results = tmp_path / "results.jsonl"
    argv = ["sweep", str(tiny["levels"]["egru"][0]), str(tiny["levels"]["egru"][90]), "--corpus",
            str(tiny["corpus"]), "--tokens", "50", "--results", str(results), "--workers", "1", "--no-progress",
            "--chip", "cmos45"]
    assert main(argv) == 0
    points = read_results(results).points
    assert [p["chip"] for p in points] == ["cmos45", "cmos45"]
    for p in points:
        assert p["energy_pj_per_token"] > 0 and p["chip_summary"]["chip"] == "cmos45"
        assert p["energy_pj_per_token"] == pytest.approx(p["chip_summary"]["energy_pj_per_token"])


def test_chip_without_a_chip_model_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "hw.cli_support", None)
    assert main(sweep_argv(tiny, tmp_path / "r.jsonl", "--chip", "spinnaker2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "chip model" in err
