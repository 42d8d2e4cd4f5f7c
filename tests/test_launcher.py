"""A Ctrl-C while the ``eventsim`` command is still loading exits 130 with nothing on stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "eventsim" / "data" / "egru_news_small.safetensors"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_ctrl_c_during_loading_exits_130_quietly():
    """Deterministic: the launcher's handler is in place while modules load, and a SIGINT then is a quiet 130."""
    code = ("import os, signal, time\n"
            "from eventsim import launcher\n"
            "signal.signal(signal.SIGINT, launcher._exit_quietly)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(5)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130
    assert proc.stderr == ""


def test_launcher_hands_ctrl_c_back_to_the_command():
    """Once loaded, Ctrl-C is KeyboardInterrupt again, so the command's own handling (exit 1 or 130) applies."""
    code = ("import signal, sys\n"
            "import eventsim.cli\n"
            "eventsim.cli.main = lambda: print(signal.getsignal(signal.SIGINT) is signal.default_int_handler) or 0\n"
            "from eventsim.launcher import main\n"
            "sys.exit(main())\n")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.15, 0.3])
def test_ctrl_c_soon_after_start_has_no_traceback(tmp_path, delay_s):
    proc = subprocess.Popen([sys.executable, "-m", "eventsim", "simulate", str(CKPT), "--text", "the market rose",
                             "--out", str(tmp_path / "out")], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert "Traceback" not in err, err
    assert proc.returncode in (0, 1, 130, -signal.SIGINT)  # -2: the Ctrl-C landed as the interpreter exited
