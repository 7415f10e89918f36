"""The ``ncjax`` command's entry point (also ``python -m ncjax``).

Signals are set before the command's modules are imported (JAX, matplotlib and orbax
take a second or more): a Ctrl-C or SIGTERM while they load ends the command with one
line and 130 or 143, never a traceback of the import. ``ncjax.cli.main`` imports the
modules of the command it was given (``commands.preload``), then handles the signals
for the command itself.
"""

import os
import signal
import sys


def _stop(signum, _frame):
    # nothing has run yet, so nothing is left half-done: end here, one line (raising would
    # land in whatever the import is doing, JAX's garbage-collection callbacks included)
    print(f"ncjax: interrupted by {signal.Signals(signum).name} while starting; nothing was "
          "done", file=sys.stderr, flush=True)
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _stop)
signal.signal(signal.SIGINT, _stop)
from ncjax.cli import main  # noqa: E402 - after the handlers, which is this module's point


def _done(rc: int) -> int:
    """``rc``, with SIGINT and SIGTERM ignored from here on: the command has finished and
    written everything, and a signal during the interpreter's exit (JAX's teardown takes a
    moment) would otherwise kill it, once Python has put the default handlers back, and
    turn its status into the signal's. SIG_IGN is the one handler Python's exit keeps."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return rc


def run() -> int:
    """The console script ``ncjax``."""
    return _done(main())


if __name__ == "__main__":
    sys.exit(_done(main()))
