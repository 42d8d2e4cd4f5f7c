"""``eventsim classify``: output, files, and one-line errors with exit 2 for every bad input."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from eventsim.checkpoint import save_checkpoint
from eventsim.cli import main
from eventsim.synthetic_encoder import random_encoder, write_random_encoder
from eventsim.validate import max_threads

two_cores = pytest.mark.skipif(max_threads() < 2, reason="--jobs 2 needs two CPUs")

SMALL = dict(vocab_size=80, max_positions=12, hidden=16, intermediate=32, mlp_ratio=2, heads=2, blocks=1, steps=8)


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    return write_random_encoder(tmp_path_factory.mktemp("enc") / "enc.safetensors", **SMALL)


def _error(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("eventsim: error:"), err
    assert pattern in err, err


def test_classify_text_prints_prediction_and_counts(encoder_path, capsys, tmp_path):
    assert main(["classify", encoder_path, "--text", "a ba c", "--steps", "10", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "predicted" in out and "ASR at the last step" in out and "dense" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    rec = summary["records"][0]
    assert summary["steps"] == 10 and rec["tokens"] == 5  # [CLS] a ba c [SEP]
    assert math.isclose(sum(rec["probabilities"].values()), 1.0)
    assert 0 < rec["counts"]["acs"] < rec["dense_counts"]["acs"]
    rows = list(csv.DictReader(open(tmp_path / "per_step.csv")))
    pops = {r["population"] for r in rows}
    assert len(rows) == 10 * len(pops) and "embedding_lif" in pops


def test_classify_corpus_json_reports_accuracy(encoder_path, capsys, tmp_path):
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\na good film,positive\nbad,negative\n")
    assert main(["classify", encoder_path, "--corpus", str(corpus), "--json", "--vth-scale", "1.5"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["inputs"] == 2 and 0 <= s["accuracy"] <= 1 and s["steps"] == 8 and s["vth_factor"] == 1.5


def test_classify_prices_the_input_on_a_chip(encoder_path, capsys):
    for chip in ("cmos45", "spinnaker2"):
        assert main(["classify", encoder_path, "--text", "a b", "--chip", chip, "--json"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["chip"]["energy_pj_per_input_mean"] > 0 and s["chip"]["latency_ns_per_input_mean"] > 0


@pytest.mark.parametrize("vth", ["0", "-1", "nan", "inf"])
def test_bad_threshold(encoder_path, capsys, vth):
    _error(capsys, ["classify", encoder_path, "--text", "a", f"--vth={vth}"], "V_th must be a finite number > 0")


@pytest.mark.parametrize("steps", ["0", "-2"])
def test_bad_steps(encoder_path, capsys, steps):
    _error(capsys, ["classify", encoder_path, "--text", "a", "--steps", steps], "--steps must be a positive integer")


def test_text_longer_than_positions(encoder_path, capsys):
    text = " ".join("abcdefghijklmn")  # 14 words + [CLS] + [SEP] = 16 tokens > 12
    _error(capsys, ["classify", encoder_path, "--text", text], "16 tokens (with [CLS] and [SEP]) exceed the model's 12")
    assert main(["classify", encoder_path, "--text", text, "--truncate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"][0]["truncated_tokens"] == 4


def test_encoder_given_to_simulate_and_lm_given_to_classify(encoder_path, small_egru, capsys):
    _error(capsys, ["simulate", encoder_path, "--text", "a b"], "use 'eventsim classify'")
    _error(capsys, ["classify", small_egru, "--text", "a b"], "use 'eventsim simulate'")


def test_missing_default_checkpoint_says_pass_one(capsys, monkeypatch):
    import eventsim.classify as classify

    monkeypatch.setattr(classify, "DEFAULT_ENCODER", "does_not_exist.safetensors")
    _error(capsys, ["classify", "--text", "a"], "pass an encoder checkpoint")


def _write_bad(tmp_path, name, edit):
    manifest, tensors = random_encoder(**SMALL)
    d = manifest.to_dict()
    edit(d)
    path = tmp_path / name
    # Write the edited manifest around valid tensors, bypassing save-time validation.
    from safetensors.numpy import save_file

    save_checkpoint(path, manifest, tensors)
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()}, str(path),
              metadata={"eventsim.manifest": json.dumps(d)})
    return str(path)


@pytest.mark.parametrize("gamma", [0.0, 1.5, -0.2])
def test_gamma_outside_unit_interval_in_checkpoint(tmp_path, capsys, gamma):
    def edit(d):
        lif = next(x for x in d["layers"] if x["kind"] == "lif")
        lif["gamma"] = gamma
    _error(capsys, ["classify", _write_bad(tmp_path, "g.safetensors", edit), "--text", "a"], "gamma must lie in (0, 1]")


def test_checkpoint_threshold_nonpositive(tmp_path, capsys):
    def edit(d):
        next(x for x in d["layers"] if x["kind"] == "lif")["v_th"] = -1.0
    _error(capsys, ["classify", _write_bad(tmp_path, "v.safetensors", edit), "--text", "a"], "v_th must be a finite number > 0")


def test_heads_not_dividing_hidden(tmp_path, capsys):
    def edit(d):
        next(x for x in d["layers"] if x["kind"] == "spiking_attention")["heads"] = 3
    _error(capsys, ["classify", _write_bad(tmp_path, "h.safetensors", edit), "--text", "a"], "3 heads do not divide size 16")


def test_model_that_does_not_fit_the_chip(tmp_path, capsys):
    path = write_random_encoder(tmp_path / "big.safetensors", **{**SMALL, "max_positions": 512, "hidden": 256,
                                                                  "intermediate": 1024, "blocks": 4, "heads": 4})
    _error(capsys, ["classify", path, "--text", "a", "--chip", "spinnaker2"], "PEs")


@pytest.mark.parametrize("jobs", ["1", pytest.param("2", marks=two_cores)])
def test_interrupted_corpus_keeps_and_writes_the_finished_inputs(encoder_path, capsys, tmp_path, monkeypatch, jobs):
    """Ctrl-C in the second of three inputs (on a worker thread with --jobs 2): exit 1, outputs committed together
    and marked interrupted."""
    from eventsim.atomic_io import verify_output_dir
    from eventsim.encoder_engine import EncoderEngine

    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\na good film,positive\nbad,negative\nfine,positive\n")
    real, calls = EncoderEngine.run, []

    def stop_on_second(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(EncoderEngine, "run", stop_on_second)
    out = tmp_path / "out"
    assert main(["classify", encoder_path, "--corpus", str(corpus), "--steps", "8", "--out", str(out),
                 "--jobs", jobs]) == 1
    assert "interrupted after 1 of 3 inputs" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["inputs"] == 1 and len(summary["records"]) == 1
    assert verify_output_dir(out) == []  # per_step.csv is the one summary.json records
    with open(out / "per_step.csv") as fh:
        assert {row["input"] for row in csv.DictReader(fh)} == {"1"}  # inputs are numbered from 1


@two_cores
def test_corpus_on_two_threads_gives_the_same_summary(encoder_path, capsys, tmp_path):
    """--jobs 2 runs inputs two at a time; every record (probabilities, counts, ASR) and per_step.csv are the same."""
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\na good film,positive\nbad,negative\nfine,positive\nno,negative\n"
                      "a b c,positive\n")
    outs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        assert main(["classify", encoder_path, "--corpus", str(corpus), "--out", str(out), "--jobs", jobs,
                     "--chip", "cmos45", "--json"]) == 0
        capsys.readouterr()
        outs[jobs] = (json.loads((out / "summary.json").read_text()), (out / "per_step.csv").read_text())
    one, two = outs["1"], outs["2"]
    assert one[0]["records"] == two[0]["records"] and len(one[0]["records"]) == 5
    assert one[1] == two[1]


@pytest.mark.parametrize("jobs", ["0", "-1", "100000", "two"])
def test_bad_jobs(encoder_path, capsys, jobs):
    _error(capsys, ["classify", encoder_path, "--text", "a", "--jobs", jobs], "argument --jobs:")
