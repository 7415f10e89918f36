"""Arithmetic: the dtypes a solve runs in and the contexts that make them exist.

``DTYPES`` is the one list of solve dtypes (validation, specs and the CLI read it).
``x64(True)`` is the context in which float64 arrays exist (JAX's x64 switch);
``precise()`` the one in which float32 matrix products run at full float32 precision
(a GPU's default TF32 products keep a 10-bit mantissa, ~1e-3 relative, coarser than the
tolerances the solvers stop on; no effect on a CPU).
"""

from __future__ import annotations

import contextlib

import jax

from ncjax.names import DTYPES  # noqa: F401 - re-exported


def x64(enabled: bool):
    """A context in which float64 arrays exist (``jax.enable_x64`` where this JAX has it);
    a no-op context when ``enabled`` is False."""
    if not enabled:
        return contextlib.nullcontext()
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # the name before jax 0.4.36
    return enable_x64()


def precise():
    """A context in which float32 matrix products run at full float32 precision."""
    return jax.default_matmul_precision("highest")
