"""The one stopping rule, the one set of status codes and the one tree select.

Every iterative solver in ncjax (the factored loop of ``ncjax.loop``, the convex rounds of
``ncjax.convex``) reports a status with these codes, in the order of ``STATUS_NAMES``:

    RUNNING (-1)  still iterating
    CONVERGED     stopped by its tolerance and, once ``ncjax.solve`` has certified it,
                  certified: the duality gap bounds F − F* within the gap tolerance
    MAX_STEPS     ran out of steps
    DIVERGED      a non-finite value; the last finite iterate is kept
    UNCERTIFIED   stopped by its tolerance, but the certificate does not hold

The factored loop's rule (``status``): converged at the first step where
‖∇F‖ ≤ gtol·‖∇F₀‖ (relative to the start), or where F moved by at most ftol·max(|F|, 1)
over the last WINDOW steps (F stops moving at the dtype's rounding floor before the
gradient test can hold there; ftol = 0 turns it off); diverged where F or ‖∇F‖ is not
finite; max_steps at max_steps.

``certified`` is the one test of a certificate. ``select(keep, new, old)`` is the tree select by which a stopped configuration keeps its
values while the others of its batch go on: ``keep`` (B,) broadcast over each leaf's
trailing axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ncjax.names import (  # noqa: F401 - re-exported
    CONVERGED, DEFAULT_MAX_STEPS, DIVERGED, MAX_STEPS, RUNNING, STATUS_NAMES, UNCERTIFIED)

# Default tolerances of the factored loop per dtype: gtol relative to ‖∇F₀‖, ftol the
# relative decrease of F over WINDOW steps. float32 reaches its rounding floor near a
# gradient norm of 1e-8 relative and then wanders: ftol stops it there.
GTOL = {"float32": 1e-6, "float64": 1e-9}
FTOL = {"float32": 1e-7, "float64": 1e-14}
WINDOW = 50


def status(step, value, gnorm, value_ref, gtol_abs, ftol, max_steps):
    """The status after ``step`` steps (module docstring): F = ``value``, ‖∇F‖ = ``gnorm``,
    ``value_ref`` F at the last multiple of WINDOW before this step, ``gtol_abs`` the
    gradient norm that ends the run. Scalars (vmap for batches)."""
    finite = jnp.isfinite(value) & jnp.isfinite(gnorm)
    flat = (step % WINDOW == 0) & (ftol > 0) & (
        jnp.abs(value_ref - value) <= ftol * jnp.maximum(jnp.abs(value), 1.0))
    return jnp.where(~finite, DIVERGED,
                     jnp.where((gnorm <= gtol_abs) | flat, CONVERGED,
                               jnp.where(step >= max_steps, MAX_STEPS, RUNNING)))


def certified(gap, value, rtol):
    """Whether a certificate holds: gap ≤ rtol·|value|, both finite. Relative to the
    objective itself (never to max(1, |F|), which is absolute for a small F: every loss here
    is ≥ 0, so F > 0 and a relative bound is one the problem's scale sets)."""
    return jnp.isfinite(gap) & jnp.isfinite(value) & (gap <= rtol * jnp.abs(value))


def select(keep, new, old):
    """Per configuration, ``new`` where ``keep`` else ``old``: keep (B,) bool, new and old
    pytrees of (B, ...) leaves."""
    def one(n, o):
        return jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - keep.ndim)), n, o)
    return jax.tree.map(one, new, old)
