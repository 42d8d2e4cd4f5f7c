"""The ``eventsim`` command's entry point: a Ctrl-C while it starts exits 130 without a traceback.

Loading the command (numpy, Numba, the chip and analysis modules) takes a few
tenths of a second; Python's default handler would turn a Ctrl-C in that time
into a ``KeyboardInterrupt`` traceback out of some import. Here a Ctrl-C before
:func:`eventsim.cli.main` runs exits quietly with 130 (nothing was started);
from then on the command's own handling applies (:mod:`eventsim.command`).
"""

from __future__ import annotations

import signal
import sys

EXIT_ABORTED = 130  # as eventsim.command.EXIT_ABORTED, which is not loaded yet


def _exit_quietly(signum, frame) -> None:
    raise SystemExit(EXIT_ABORTED)


def main() -> int:
    try:
        signal.signal(signal.SIGINT, _exit_quietly)
    except ValueError:  # not the main thread
        pass
    from eventsim.cli import main as cli_main

    if signal.getsignal(signal.SIGINT) is _exit_quietly:  # loaded: Ctrl-C raises KeyboardInterrupt again
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
