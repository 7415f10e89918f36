"""XLA settings a process chooses before JAX starts its CPU backend.

XLA's CPU runtime can wedge (idle threads, no result, forever) on vmapped programs that mix
batched linear-algebra calls with the solver's loop (docs/known-issues.md). Two flags avoid
every wedge we met: single-threaded Eigen, and the scheduler that does not reorder a
program for concurrency. ``configure_cpu`` adds them to XLA_FLAGS unless the user named
them; the CLI calls it first thing, and a Python program calls it before its first JAX
computation (XLA reads XLA_FLAGS once, when the backend starts). It changes the process's
environment, so it is never done on import.
"""

from __future__ import annotations

import os

CPU_FLAGS = {"xla_cpu_multi_thread_eigen": "false",
             "xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def configure_cpu(flags: dict | None = None) -> str:
    """Add ``flags`` (default ``CPU_FLAGS``) to the XLA_FLAGS environment variable, each
    unless XLA_FLAGS already names it; returns the new XLA_FLAGS. Effective only before
    JAX starts its CPU backend (the first computation or device query)."""
    current = os.environ.get("XLA_FLAGS", "")
    for name, value in (CPU_FLAGS if flags is None else flags).items():
        if name not in current:
            current = f"{current} --{name}={value}".strip()
    os.environ["XLA_FLAGS"] = current
    return current
