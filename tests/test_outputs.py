"""Output sets: atomic files, strict JSON, kills at random instants, and memory flat in the corpus length."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eventsim.atomic_io import (
    JOURNAL_NAME,
    OutputSet,
    dumps_json,
    ensure_out_dir,
    json_safe,
    recover_output_dir,
    verify_output_dir,
    write_json_atomic,
)
from eventsim.errors import EventsimError

ROOT = Path(__file__).resolve().parent.parent


def test_json_safe_and_strict_dumps():
    obj = {"a": float("nan"), "b": np.float32(1.5), "c": np.arange(3), "d": (1, float("-inf")), 3: np.bool_(True)}
    assert json.loads(dumps_json(obj)) == {"a": None, "b": 1.5, "c": [0, 1, 2], "d": [1, None], "3": True}
    assert json_safe(np.float64("inf")) is None
    with pytest.raises(EventsimError, match="cannot write JSON"):
        dumps_json({"x": object()})


def test_write_json_atomic_is_0644_and_valid(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_json_atomic(tmp_path / "s.json", {"v": float("nan")})
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644
    assert json.loads(p.read_text()) == {"v": None}
    assert [x.name for x in tmp_path.iterdir()] == ["s.json"]


def test_output_set_replaces_the_whole_set_and_removes_stale_files(tmp_path):
    out = tmp_path / "o"
    with OutputSet(out) as s:
        s.path("a.csv").write_text("1\n")
        s.path("chip.csv").write_text("old chip\n")
        s.commit(index={"run": 1})
    with OutputSet(out) as s:
        s.path("a.csv").write_text("2\n")
        s.commit(index={"run": 2})
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["run"] == 2
    assert verify_output_dir(out) == []


def test_output_set_without_commit_keeps_the_old_set(tmp_path):
    out = tmp_path / "o"
    with OutputSet(out) as s:
        s.path("a.csv").write_text("1\n")
        s.commit(index={"run": 1})
    with pytest.raises(RuntimeError), OutputSet(out) as s:
        s.path("a.csv").write_text("half")
        raise RuntimeError("killed")
    assert (out / "a.csv").read_text() == "1\n"
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "summary.json"]


def test_a_commit_cut_short_is_finished_by_the_next_run(tmp_path):
    """Simulate a kill right after the journal: old summary gone, new files still staged."""
    out = tmp_path / "o"
    with OutputSet(out) as s:
        s.path("a.csv").write_text("1\n")
        s.commit(index={"run": 1})
    s = OutputSet(out).__enter__()
    s.path("a.csv").write_text("2\n")
    write_json_atomic(s.staging / "summary.json", {"run": 2, "outputs": s.digests()})
    journal = {"staging": s.staging.name, "files": ["a.csv", "summary.json"], "index": "summary.json", "remove": []}
    write_json_atomic(out / JOURNAL_NAME, journal)
    os.unlink(out / "summary.json")  # the first step of applying it
    assert verify_output_dir(out) == []  # no summary: nothing claims anything
    recover_output_dir(out)
    assert json.loads((out / "summary.json").read_text())["run"] == 2
    assert (out / "a.csv").read_text() == "2\n" and verify_output_dir(out) == []


def test_ensure_out_dir_refusals(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    for bad, pattern in ((f, "is a file"), (Path("/dev/null"), "not a folder"), (f / "x" / "y", "is a file, so")):
        with pytest.raises(EventsimError, match=pattern):
            ensure_out_dir(bad)


# ------------------------------------------------------------------ kills at random instants (subprocesses)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _check_consistent(out: Path) -> int | None:
    """Tokens the folder's summary claims (None: no summary); asserts every file agrees with it."""
    assert verify_output_dir(out) == []
    summary_path = out / "summary.json"
    if not summary_path.exists():
        return None
    s = json.loads(summary_path.read_text())
    rows = list(csv.DictReader(open(out / "per_token.csv")))
    assert len(rows) == s["tokens"]
    assert [int(r["index"]) for r in rows] == list(range(s["tokens"]))
    assert sum(int(r["effective_macs_recurrent"]) for r in rows) == s["effective_macs"]
    if "chip" in s:
        pe_rows = sum(1 for _ in open(out / "chip_pe_trace.csv")) - 1
        assert pe_rows == s["tokens"] * s["chip"]["pes_used"]
    return s["tokens"]


@pytest.mark.slow
def test_kill_at_random_instants_never_leaves_outputs_that_disagree(small_egru, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("b c d e f g h i j k l m n o p.\n" * 400)  # 6,400 tokens
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "eventsim", "simulate", small_egru, "--corpus", str(corpus), "--chip", "cmos45",
            "--out", str(out), "--no-progress", "--show", "0"]
    t0 = time.monotonic()
    first = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300)
    full = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    assert _check_consistent(out) == 6400
    rng = np.random.default_rng(7)
    seen_codes = set()
    for i, sig in enumerate([signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL,
                             signal.SIGINT]):
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(float(rng.uniform(0.3, 1.0)) * full)
        proc.send_signal(sig)
        err = proc.communicate(timeout=300)[1]
        seen_codes.add(proc.returncode)
        assert "Traceback" not in err, err
        tokens = _check_consistent(out)
        if tokens is None:  # a SIGKILL inside a commit: its journal is there, and finishing it gives a full set
            assert sig == signal.SIGKILL and (out / JOURNAL_NAME).exists(), i
            recover_output_dir(out)
            tokens = _check_consistent(out)
        assert tokens is not None  # old complete set, or the new (possibly interrupted) one
        if sig != signal.SIGKILL and proc.returncode == 1:
            assert json.loads((out / "summary.json").read_text())["interrupted"] is True
        assert not [p for p in out.iterdir() if p.name.startswith(".eventsim-staging")] or sig == signal.SIGKILL, i
    recover_output_dir(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ streaming: memory flat in the corpus length


MEASURE = """
import resource, sys
from eventsim.cli import main
rc = main(sys.argv[1:])
print("RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(rc)
"""


def _peak_rss_kb(argv: list[str]) -> int:
    proc = subprocess.run([sys.executable, "-c", MEASURE, *argv], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("RSS_KB")][-1]
    return int(line.split()[1])


@pytest.mark.slow
def test_simulate_corpus_memory_does_not_grow_with_the_corpus(small_egru, tmp_path):
    sentence = "b c d e f g h i j k l m n o p. "  # 16 tokens
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(sentence * 250)  # 4,000 tokens
    large.write_text(sentence * 5000)  # 80,000 tokens, one line
    rss = {}
    for name, corpus in (("small", small), ("large", large)):
        rss[name] = _peak_rss_kb(["simulate", small_egru, "--corpus", str(corpus), "--out", str(tmp_path / name),
                                  "--no-progress", "--show", "5", "--chip", "cmos45"])
    assert json.loads((tmp_path / "large" / "summary.json").read_text())["tokens"] == 80_000
    # Holding 80k tokens' rows, trace and chip records costs well over 100 MB; streaming keeps it to the chunk.
    assert rss["large"] - rss["small"] < 25_000, rss
