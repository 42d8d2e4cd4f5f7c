"""A Ctrl-C or SIGTERM that lands in Python code called back from C (llvmlite's hooks while Numba compiles)
is raised once that code has returned: never printed as an ignored exception, never lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from eventsim.command import _in_c_callback, sigterm_as_interrupt

# Code whose frames look like llvmlite's (the check reads the file name of the frames on the stack).
FAKE = compile(
    "import sys, time\n"
    "def inside(send):\n"
    "    frame = sys._getframe()\n"
    "    send()\n"
    "    t = time.monotonic()\n"
    "    while time.monotonic() - t < 0.15:\n"
    "        pass\n"
    "    return frame\n",
    "/site-packages/llvmlite/binding/executionengine.py", "exec")
NS: dict = {}
exec(FAKE, NS)


def test_frames_inside_llvmlite_are_recognised():
    frame = NS["inside"](lambda: None)
    assert _in_c_callback(frame)
    import sys

    assert not _in_c_callback(sys._getframe())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_waits_for_the_callback_then_is_raised(sig):
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            NS["inside"](lambda: os.kill(os.getpid(), sig))
            finished.append(True)  # reached: the code "in the callback" ran to its end
            time.sleep(2.0)  # the deferred interrupt arrives here
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_interrupt_pending_when_the_block_ends_is_raised_at_its_end():
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            NS["inside"](lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_interrupt_outside_a_callback_is_immediate():
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2.0)
    assert time.monotonic() - t < 1.0
