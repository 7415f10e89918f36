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


def run() -> int:
    """The console script ``ncjax``."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
