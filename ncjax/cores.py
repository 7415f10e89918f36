"""Every core of a CPU host for one batch: the batch split over helper processes.

XLA's CPU runtime runs one program on one core here: its batched LAPACK calls (the SVD,
eigh and solves of the solvers) loop over the matrices on the calling thread, two
programs dispatched together on one device run one after the other, two Python threads
calling compiled programs at once wedged (jax 0.10.2), and several forced host devices
wedge too (docs/known-issues.md). Separate processes do not share any of that: two of them
each ran the convex solve at its one-process rate on the 2-core VM (benchmarks/RESULTS.md).

So a large batch on a CPU is cut into ``n`` contiguous parts (``parts``): part 0 runs in
the calling process, each other part in a helper process, a persistent
``python -c 'from ncjax import cores; cores.serve()'`` started on first use (it imports
JAX and compiles its programs once, then serves every later call) and stopped at exit. A
request is a pickled (module, function, args) read from the helper's stdin, the answer a
pickled ("ok", value) or ("error", exception) written to its stdout; its Python stdout
goes to stderr, so nothing else reaches the pipe. A helper ignores SIGINT and runs in its
own session (a Ctrl-C is the caller's to handle) and ends when its stdin closes. It gets
the caller's environment with ``NCJAX_HELPER=i`` (its own compilation-cache folder,
``ncjax.compilation``: JAX writes cache entries in place, unlocked) and the CPU
flags of ``ncjax.xla``. This module does not import JAX (the CLI's commands that only read
a run start without it).

Nothing is lost when a helper fails: its part is computed in the calling process instead
(``run``), helpers are not used again in that process, and a warning says why. A
function raising an exception in a helper raises it in the caller.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import warnings

from ncjax import xla

# Below this many configurations a process, the batch is not split: the parts' overhead
# (pickling, the helper's own first compile) would cost more than the core saves.
MIN_PER_PROCESS = 128
ENV = "NCJAX_PROCESSES"  # the processes ncjax.solve uses by default (1: none of this)
HELPER_ENV = "NCJAX_HELPER"  # set to i in helper i (its cache folder: ncjax.compilation)

_helpers: list = []
_broken: str | None = None


def available() -> int:
    """The cores this process may run on (its CPU affinity), or ``NCJAX_PROCESSES``."""
    if os.environ.get(ENV, "").strip():
        return max(int(os.environ[ENV]), 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def count(B: int, platform: str, requested: int | None = None) -> int:
    """The processes for a batch of B configurations on ``platform``: ``requested`` when
    given (at most B), else every core (``available``) on a CPU, no more than one per
    MIN_PER_PROCESS configurations; 1 on an accelerator or once a helper failed."""
    if requested is not None:
        return max(1, min(int(requested), B))
    if platform != "cpu" or _broken is not None:
        return 1
    return max(1, min(available(), B // MIN_PER_PROCESS))


def parts(B: int, n: int) -> list:
    """n contiguous (start, stop) row ranges covering range(B), sizes differing by ≤ 1."""
    edges = [B * i // n for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def processes() -> list:
    """The running helpers' ``subprocess.Popen`` objects, helper 0 first."""
    return [h.proc for h in _helpers]


def broken() -> str | None:
    """Why helpers are no longer used in this process (None: they are)."""
    return _broken


def reset() -> None:
    """Stop the helpers and use them again (after a failure): the next ``run`` starts new
    ones."""
    global _broken
    shutdown()
    _broken = None


class _Failed(Exception):
    """A helper died or answered garbage (not an exception of the function)."""


class _Helper:
    def __init__(self, index: int):
        env = {**os.environ, HELPER_ENV: str(index), ENV: "1"}  # never splits its part
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from ncjax import cores; cores.serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.writer: threading.Thread | None = None  # the request being written (``send``)
        self.failure: Exception | None = None  # what writing it raised

    def send(self, module: str, name: str, args: tuple) -> None:
        """Write the request from a thread: a large one fills the pipe, and a new helper
        reads it only once it has imported JAX, while the caller starts on its own part."""
        self.failure = None

        def write():
            try:
                pickle.dump((module, name, args), self.proc.stdin, pickle.HIGHEST_PROTOCOL)
                self.proc.stdin.flush()
            except Exception as e:  # noqa: BLE001 - reported by ``receive``
                self.failure = e

        self.writer = threading.Thread(target=write, daemon=True)
        self.writer.start()

    def receive(self):
        self.writer.join()
        if self.failure is not None:
            e = self.failure
            raise _Failed(f"could not hand a part to a helper process ({type(e).__name__}: "
                          f"{e})")
        kind, value = pickle.load(self.proc.stdout)
        if kind == "error":
            raise value
        return value

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - at exit, whatever state it is in
            self.proc.kill()


def _pool(n: int) -> list:
    while len(_helpers) < n:
        _helpers.append(_Helper(len(_helpers)))
    return _helpers[:n]


@atexit.register
def shutdown() -> None:
    """Stop the helpers (at exit; a later ``run`` starts new ones)."""
    while _helpers:
        _helpers.pop().stop()


def run(module: str, name: str, arg_parts: list) -> list:
    """[module.name(*args) for args in arg_parts], part 0 here, each other part in a helper
    at the same time (module docstring). The function must be importable by name and its
    arguments and value picklable. Every helper's answer is read before an exception is
    raised; an interruption here stops the helpers (an unread answer would be the next
    call's)."""
    fn = getattr(importlib.import_module(module), name)
    sent = []
    if len(arg_parts) > 1 and _broken is None:
        try:
            sent = _pool(len(arg_parts) - 1)
        except OSError as e:
            _give_up(f"could not start a helper process ({type(e).__name__}: {e})")
        for h, args in zip(sent, arg_parts[1:]):
            h.send(module, name, args)
    try:
        out = [fn(*arg_parts[0])]
        error = None
        for i, args in enumerate(arg_parts[1:]):
            if i < len(sent):
                try:
                    out.append(_receive(sent[i]))
                    continue
                except _Failed as e:
                    _give_up(str(e))
                    sent = []
                except Exception as e:  # noqa: BLE001 - the function's own, raised below
                    error = error or e
                    out.append(None)
                    continue
            out.append(fn(*args))
    except BaseException:
        shutdown()
        raise
    if error is not None:
        raise error
    return out


def _receive(helper: _Helper):
    try:
        return helper.receive()
    except (EOFError, OSError, pickle.UnpicklingError) as e:
        raise _Failed(f"a helper process failed (exit code {helper.proc.poll()}; "
                      f"{type(e).__name__}: {e})") from None


def _give_up(why: str) -> None:
    global _broken
    _broken = why
    warnings.warn(f"ncjax: {why}; this process computes without helpers from now on",
                  RuntimeWarning, stacklevel=3)
    shutdown()


def serve() -> None:
    """A helper's loop (module docstring): requests from stdin until it closes."""
    xla.configure_cpu()
    # a terminal's Ctrl-C is the caller's to handle; a helper ends when its stdin closes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout lands in stderr
    while True:
        try:
            module, name, args = pickle.load(inp)
        except EOFError:
            return
        try:
            reply = ("ok", getattr(importlib.import_module(module), name)(*args))
        except Exception as e:  # noqa: BLE001 - handed back to the caller, who raises it
            reply = ("error", e)
        pickle.dump(reply, out, pickle.HIGHEST_PROTOCOL)
        out.flush()
