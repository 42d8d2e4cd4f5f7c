"""``eventsim`` command line: simulate a checkpoint, inspect checkpoints and chips, sweep, plot.

Every subcommand is a parser function plus one entry in :data:`COMMANDS`; :func:`main`
gives each the same contract (see :mod:`eventsim.command`): exit 0 done, 1
interrupted with finished work written, 2 bad input as one line on stderr, 130
interrupted before anything was kept, 141 when stdout/stderr was closed early.
"""

from __future__ import annotations

import sys

from analysis import converge as converge_command
from analysis import plots as plot_command
from analysis import sweep as sweep_command
from eventsim import __version__
from eventsim import classify as classify_command
from eventsim import cmd_info as info_command
from eventsim import cmd_simulate as simulate_command
from eventsim.command import (
    EXIT_ABORTED,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ArgumentParser,
    run_handler,
)
from eventsim.provenance import command_line

DEFAULT_CHECKPOINT = simulate_command.DEFAULT_CHECKPOINT
default_checkpoint = simulate_command.default_checkpoint
add_chip_arguments = simulate_command.add_chip_arguments
__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "build_parser", "default_checkpoint", "main"]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="eventsim",
        description="Event-driven simulation of spiking and event-based language models, with exact operation counts.",
    )
    parser.add_argument("--version", action="version", version=f"eventsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    simulate_command.add_parser(sub)
    classify_command.add_parser(sub)
    info_command.add_info_parser(sub)
    info_command.add_chips_parser(sub)
    sweep_command.add_parser(sub)
    plot_command.add_parser(sub)
    converge_command.add_parser(sub)
    return parser


COMMANDS = {
    "simulate": simulate_command.run,
    "classify": classify_command.run,
    "converge": converge_command.run,
    "info": info_command.run_info,
    "chips": info_command.run_chips,
    "sweep": sweep_command.run,
    "plot": plot_command.run,
}


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version (0) or a bad option (2, one line already printed)
            return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
        args.command_line = command_line(argv)
    except KeyboardInterrupt:  # Ctrl-C before the command started: nothing was written
        return EXIT_ABORTED
    return run_handler("eventsim", COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
