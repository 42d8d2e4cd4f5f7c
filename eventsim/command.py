"""What every command-line program of the project shares: parser, help, exit codes, error handling.

Exit codes (the same for every subcommand, present and future):

* ``0`` -- finished.
* ``1`` -- interrupted (Ctrl-C, SIGTERM) after some work was finished; that work
  was written and is marked interrupted. A handler returns ``EXIT_INTERRUPTED``.
* ``2`` -- bad input: one line on stderr, ``<prog>: error: <what, where>``.
  Raised as :class:`EventsimError` anywhere below a handler, or by the parser.
* ``130`` -- interrupted before anything was kept (nothing was written).
* ``141`` -- stdout or stderr was closed early (``| head``): the output is
  incomplete, so this is never 0.

:func:`run_handler` applies this to any handler ``fn(args) -> int``; a new
subcommand gets it by being listed in ``eventsim.cli.COMMANDS``. SIGTERM is
treated like Ctrl-C so that ``kill`` also keeps finished work.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable

from eventsim.errors import EventsimError

EXIT_OK, EXIT_INTERRUPTED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_ABORTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends ``(default: X)`` to options that have a real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and action.option_strings
            and default not in (None, False, argparse.SUPPRESS)
            and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            text += " (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's rules: one-line errors, defaults shown in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        name = self.prog.split()[0]
        sub = " ".join(self.prog.split()[1:])
        where = f" {sub}" if sub else ""
        self.exit(EXIT_BAD_INPUT, f"{name}: error: {message} (see {name}{where} --help)\n")


def print_error(prog: str, message: str) -> None:
    """One line on stderr; never raises (stderr may be closed)."""
    text = " ".join(str(message).split("\n"))
    with contextlib.suppress(OSError, ValueError):
        print(f"{prog}: error: {text}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's exit flush does not complain."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _in_c_callback(frame) -> bool:
    """Whether Python code called back from C is running: llvmlite's compiler hooks during a Numba compile.

    An exception raised there cannot leave the callback: ctypes prints it with a traceback and drops it.
    """
    while frame is not None:
        if "llvmlite" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _interrupt(signum, frame) -> None:
    """Raise KeyboardInterrupt now, or, inside a C callback, 20 ms later (and again until outside)."""
    if _in_c_callback(frame):
        with contextlib.suppress(ValueError, OSError, AttributeError):  # no SIGALRM/setitimer: raise as before
            signal.signal(signal.SIGALRM, _interrupt)
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            return
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM and Ctrl-C raise KeyboardInterrupt (main thread only).

    Ctrl-C is taken over only where it has Python's default handler (sweep workers ignore it).
    A signal that arrives while a Numba compile runs Python code inside a C callback is raised
    once the callback has returned (:func:`_interrupt`), so it is neither lost nor printed as a
    traceback.
    """
    sigs = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        sigs.append(signal.SIGINT)
    old = {}
    try:
        for sig in sigs + [signal.SIGALRM]:
            old[sig] = signal.signal(sig, _interrupt)
    except (ValueError, OSError, AttributeError):  # not the main thread (or no SIGALRM)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        yield
        return
    pending = False
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            pending = signal.setitimer(signal.ITIMER_REAL, 0)[0] > 0  # a deferred interrupt not yet raised
            for sig, handler in old.items():
                signal.signal(sig, handler)
    if pending:
        raise KeyboardInterrupt


class DeferInterrupts:
    """Within the block, Ctrl-C and SIGTERM wait: they are raised as KeyboardInterrupt when it ends.

    For short sections that must finish as a whole (one chunk written to every
    file and every total). Outside the main thread it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending = False
        self.old: dict = {}

    def _handler(self, signum, frame) -> None:
        self.pending = True

    def __enter__(self) -> DeferInterrupts:
        try:
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread
            self.old.clear()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)
        if self.pending and exc_type is None:
            raise KeyboardInterrupt


def run_handler(prog: str, fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call ``fn(args)`` and turn what it raises into the exit codes above."""
    try:
        with sigterm_as_interrupt():
            code = fn(args)
        return EXIT_OK if code is None else int(code)
    except EventsimError as exc:
        print_error(prog, exc)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, ValueError):
            print(f"{prog}: interrupted; nothing was written", file=sys.stderr, flush=True)
        return EXIT_ABORTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except MemoryError:
        print_error(prog, "out of memory (try fewer --tokens, or set EVENTSIM_MAX_MEMORY_BYTES lower to be refused early)")
        return EXIT_BAD_INPUT
    except OSError as exc:  # a file-system condition no check anticipated: still one line
        if exc.errno == errno.EPIPE:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        where = f"{exc.filename}: " if exc.filename else ""
        print_error(prog, f"{where}{exc.strerror or exc}")
        return EXIT_BAD_INPUT
