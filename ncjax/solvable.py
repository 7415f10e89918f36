"""What only the engine can judge of a spec (``ncjax.spec`` checks the rest, without JAX):
the loss of its cells (``loss_at``) and ``check``, which refuses a spec whose loss values
the loss's factory refuses, or whose settings ``solver.prepare`` would refuse at solve time
(the solver's settings, convex with d < K − 1, …; one configuration of each K block, as a
sweep passes it). A sweep runs ``check`` on a new spec before it writes anything, so a
solve refuses nothing a sweep accepted; an error is a ``SpecError`` naming the file and
the key.
"""

from __future__ import annotations

import warnings

import numpy as np

from ncjax import losses, solver
from ncjax.grid import Grid, SpecError, expand
from ncjax.spec import LOSS_KEYS, TABLES, Spec
from ncjax.validate import InputError, NCJaxWarning

__all__ = ["check", "loss_at"]


def loss_at(problem: dict, axes, params: dict):
    """The loss of a spec's [problem] table ``problem`` at the cells whose settings are
    ``params`` (name → (B,), ``Grid.params_at``): a parameter on an axis (one of ``axes``)
    takes each cell's value, the others the table's. InputError for a bad parameter."""
    name = problem.get("loss", "ce")
    at = lambda k: params[k] if k in axes else problem[k]
    if "weight_B" in problem or "weight_B" in axes:  # two clusters: K_A classes, then K_B
        wB, KA, KB = (np.asarray(at(k), float).reshape(-1) for k in ("weight_B", "K_A", "K_B"))
        B = max(wB.size, KA.size, KB.size)
        wB, KA = np.broadcast_to(wB, B), np.broadcast_to(KA, B)
        K = int(KA[0] + np.broadcast_to(KB, B)[0])
        j = np.arange(K)[None, :]
        return losses.weighted_ce(np.where(j < KA[:, None], 1.0, wB[:, None]))
    return losses.get(name, **{k: at(k) for k in losses.parameters(name)
                               if k in problem or k in axes})


def _check_solve(spec: Spec, grid: Grid) -> None:
    """Refuse what ``solver.prepare`` would refuse at solve time (the solver's settings,
    convex with d < K − 1, …): one configuration of each K block, as a sweep passes it."""
    for block in grid.blocks():
        i = int(block[0])
        p = grid.params_at([i])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NCJaxWarning)  # a sweep warns when it solves
                solver.prepare(grid.counts([i]), p["lam_W"], p["lam_H"], p["lam_b"],
                               d=int(p["d"][0]), m=spec.problem.get("m", 1),
                               seed=p["seed"], key_index=np.array([i]),
                               loss=loss_at(spec.problem, spec.axes, p),
                               bias=spec.problem.get("bias", True), **spec.solver)
        except InputError as e:
            word = str(e).split(" ", 1)[0]
            key = next((f"[{t}].{word}" for t in ("solver", "problem") if word in TABLES[t]),
                       "[solver]")
            raise SpecError(f"{spec.path}: {key}: {e} (K = {int(p['K'][0])})") from None


def check(spec: Spec) -> Spec:
    """``spec`` if the engine accepts it: the loss at every cell of its axes (a bad value
    names its ``[problem]`` or ``[axes]`` key), then, but for a threshold grid
    (``ncjax.threshold_sweep.check``), one solve setting per K block; else a SpecError."""
    problem, axes, path = spec.problem, spec.axes, spec.path
    have = set(problem) | set(axes)
    try:
        if "weight_B" not in have:  # spec checks weight_B's values itself
            loss_at(problem, axes, axes)
    except InputError as e:
        word = str(e).split(" ", 1)[0]
        where = "[axes]" if word in axes else "[problem]"
        key = f"{where}.{word}" if word in LOSS_KEYS else "[problem].loss"
        raise SpecError(f"{path}: {key}: {e}") from None
    if spec.thresholds is None:  # a threshold grid runs no solve of its settings
        _check_solve(spec, expand(spec))
    return spec
