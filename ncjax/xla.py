"""XLA settings a process chooses before JAX starts its CPU backend.

XLA's CPU runtime can wedge (idle threads, no result, forever) on vmapped programs that mix
batched linear-algebra calls with the solver's loop (docs/known-issues.md). The cause, seen
in gdb on every wedge of jax 0.10.2: jaxlib's LAPACK kernels (SVD, eigh, LU, ...) split a
batch over XLA's intra-op thread pool and block a pool thread until the pieces are done;
when every pool thread is such a kernel (two of them on a 2-core machine), no thread is
left to run the pieces. Later jaxlib builds no longer split LAPACK batches.

``configure_cpu`` sizes that pool to one thread (``CPU_ENV``: XLA's CPU client reads the
``NPROC`` variable for it), so a LAPACK kernel runs its batch itself, and adds two flags
to XLA_FLAGS (``CPU_FLAGS``: single-threaded Eigen, and the scheduler that does not
reorder a program for concurrency), each unless the user set it. ncjax reaches a CPU's
other cores through processes (``ncjax.cores``), not through this pool. The CLI calls it first thing, and a Python program calls it before its
first JAX computation (XLA reads both once, when the backend starts). It changes the
process's environment, so it is never done on import.
"""

from __future__ import annotations

import os

CPU_FLAGS = {"xla_cpu_multi_thread_eigen": "false",
             "xla_cpu_enable_concurrency_optimized_scheduler": "false"}
# The size of XLA's CPU intra-op thread pool (module docstring).
CPU_ENV = {"NPROC": "1"}


def configure_cpu(flags: dict | None = None) -> str:
    """Add ``flags`` (default ``CPU_FLAGS``) to the XLA_FLAGS environment variable, each
    unless XLA_FLAGS already names it, and set ``CPU_ENV``'s variables the environment
    does not hold; returns the new XLA_FLAGS. Effective only before JAX starts its CPU
    backend (the first computation or device query)."""
    for name, value in CPU_ENV.items():
        os.environ.setdefault(name, value)
    current = os.environ.get("XLA_FLAGS", "")
    for name, value in (CPU_FLAGS if flags is None else flags).items():
        if name not in current:
            current = f"{current} --{name}={value}".strip()
    os.environ["XLA_FLAGS"] = current
    return current
