"""A UFM problem as one value: class counts, regularisation, loss and bias mode.

    F(W, H, b) = (1/N) Σ_k Σ_i ℓ(W h_{k,i} + b, k)
                 + (λ_W/2)‖W‖²_F + (λ_H/2)‖H‖²_F + (λ_b/2)‖b‖²       (half convention)

``Problem`` is a pytree whose leaves are the arrays counts (..., K), lam_W, lam_H, lam_b
(...) and theta, the loss's parameters (a dict name → (...) or, per class, (..., K);
empty for CE and MSE) — one configuration, or a batch with a leading axis B that
``jax.vmap`` maps over — and whose static part is the loss without its parameter values
(``ncjax.losses.Loss.stripped``: a new τ or α is a new leaf value, not a new program) and
``bias``: True for the model with a bias b (free when λ_b = 0, penalised when λ_b > 0),
False for the model W h without one (the setting of the SELI theorem, Thrampoulidis et
al. 2022). theta None (a Problem built by hand) reads the loss's own values as constants.
Every stage takes it: the objectives, the factored and the convex solvers, the
certificate, the metrics and the theory; the loss's functions take ``loss_args``.

Derived quantities, one copy each: N = Σ n_k, π = n/N, λ = sqrt(λ_W λ_H) (the weight of the
nuclear norm in the convex form; only λ enters it), and the balance factor
a = (λ_H/λ_W)^{1/4} that maps a balanced factorisation to (W, H): W = a V, h̄ = v/a.

``make`` checks raw inputs at the boundary (``ncjax.validate``) and returns a batched
numpy Problem.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import losses
from ncjax.convention import CONVENTIONS, from_half, to_half  # noqa: F401 - re-exported
from ncjax.losses import Loss
from ncjax.validate import InputError, as_counts, as_lam, broadcast_batch


class Problem(NamedTuple):
    """One UFM configuration (counts (K,), scalar λ's) or a batch ((B, K), (B,)); the loss
    and the bias mode are static (module docstring)."""

    counts: jax.Array
    lam_W: jax.Array
    lam_H: jax.Array
    lam_b: jax.Array
    loss: Loss = losses.ce()
    bias: bool = True
    theta: dict | None = None

    @property
    def K(self) -> int:
        return self.counts.shape[-1]

    @property
    def N(self):
        return jnp.sum(self.counts, axis=-1)

    @property
    def pi(self):
        return self.counts / jnp.sum(self.counts, axis=-1, keepdims=True)

    @property
    def lam(self):
        """λ = sqrt(λ_W λ_H), as sqrt(λ_W) sqrt(λ_H) so that the product never overflows."""
        return jnp.sqrt(self.lam_W) * jnp.sqrt(self.lam_H)

    @property
    def balance(self):
        """a = (λ_H/λ_W)^{1/4}: W = a V and h̄ = v/a for a balanced pair (V, v)."""
        return self.lam_H**0.25 / self.lam_W**0.25  # the ratio alone may underflow

    @property
    def loss_args(self) -> dict:
        """th, what the loss's functions take: ``loss.prepare(theta, counts)`` of one
        configuration (call it inside ``vmap`` for a batch)."""
        theta = self.loss.constants() if self.theta is None else self.theta
        return self.loss.prepare(theta, self.counts)

    def astype(self, dtype) -> "Problem":
        """The same problem with its arrays cast to ``dtype``."""
        cast = lambda a: jnp.asarray(a, dtype)
        theta = None if self.theta is None else {k: cast(v) for k, v in self.theta.items()}
        return self._replace(counts=cast(self.counts), lam_W=cast(self.lam_W),
                             lam_H=cast(self.lam_H), lam_b=cast(self.lam_b), theta=theta)


jax.tree_util.register_pytree_node(
    Problem,
    lambda p: ((p.counts, p.lam_W, p.lam_H, p.lam_b, p.theta), (p.loss, p.bias)),
    lambda aux, leaves: Problem(*leaves[:4], *aux, leaves[4]))


def with_loss(counts, loss) -> tuple[Loss, dict]:
    """(the static loss, theta) for counts (K,) | (B, K): the loss's parameters broadcast
    to the batch of the counts (``losses.theta``)."""
    loss = losses.get(loss)
    n = np.asarray(counts)
    B = n.shape[0] if n.ndim == 2 else None
    th = losses.theta(loss, 1 if B is None else B, n.shape[-1])
    th = {k: (v[0] if B is None else v) for k, v in th.items()}
    return loss.stripped(), th


def from_lam(counts, lam, lam_b=0.0, *, loss=None, bias: bool = True) -> Problem:
    """The problem whose convex form has weight λ: λ_W = λ_H = λ (the convex form, its
    dual and the certificate depend on λ_W, λ_H only through λ). The loss's parameters
    are broadcast to the batch of the counts."""
    loss, th = with_loss(counts, loss)
    return Problem(counts, lam, lam, lam_b, loss, bias, th)


def make(counts, lam_W, lam_H, lam_b=0.0, *, loss=None, bias=True,
         convention: str = "half", **per_config):
    """Check raw inputs and broadcast them to one batch: (problem, batched, extra).

    counts (K,) | (B, K); λ's scalars | (B,) in ``convention`` (converted to the half
    convention); λ_W, λ_H > 0, with λ = sqrt(λ_W λ_H), the balance factor and λ_W λ_H
    representable in float64 (else no dtype can solve the problem: refused). ``per_config``:
    further scalars | (B,) arrays (already checked) broadcast with them, returned in
    ``extra``. The loss's parameters (a loss given per configuration, e.g.
    ``vs(0.5, [0.0, 1.0])``) join the batch too, into ``theta``. ``batched`` is False when
    every input was unbatched. Raises InputError.
    """
    if not isinstance(bias, (bool, np.bool_)):
        raise InputError(f"bias must be True or False, got {bias!r}")
    loss = losses.get(loss)
    n = as_counts(counts)
    given = (as_lam("lam_W", lam_W, positive=True), as_lam("lam_H", lam_H, positive=True),
             as_lam("lam_b", lam_b))
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        lw, lh, lb = (np.asarray(v, np.float64) for v in to_half(*given, convention))
        prod = np.asarray(lw, np.float64) * np.asarray(lh, np.float64)
        ratio = np.asarray(lh, np.float64) / np.asarray(lw, np.float64)
    tiny = np.finfo(np.float64).tiny
    for name, v in (("lam_W", lw), ("lam_H", lh), ("lam_b", lb)):
        if not np.all(np.isfinite(v)):  # finite as given, but doubled by "paper"
            raise InputError(f"{name} = {np.asarray(v).tolist()} in the half convention is "
                             "outside float64's range")
    for name, v in (("lam_W * lam_H", prod), ("lam_H / lam_W", ratio)):
        if not np.all(np.isfinite(v) & (v >= tiny)):
            raise InputError(
                f"{name} = {np.asarray(v).tolist()} is outside float64's range: the "
                "objective's terms cannot be represented in any dtype; rescale the problem")
    if not np.all(np.isfinite(np.sum(n, axis=-1))):
        raise InputError("the total count N overflows float64")
    sized = {f"loss parameter {k}": np.zeros(B) for k, B in losses.batch_sizes(loss).items()}
    B, batched, n, per = broadcast_batch(n, lam_W=lw, lam_H=lh, lam_b=lb, **sized,
                                         **per_config)
    theta = losses.theta(loss, B, n.shape[-1])
    prob = Problem(np.asarray(n), np.asarray(per.pop("lam_W")), np.asarray(per.pop("lam_H")),
                   np.asarray(per.pop("lam_b")), loss.stripped(), bool(bias),
                   {k: np.asarray(v) for k, v in theta.items()})
    return prob, batched, {k: np.asarray(v) for k, v in per.items() if k not in sized}
