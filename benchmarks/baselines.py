"""The harness's baselines outside ncjax's compiled solve: the solver's L-BFGS body jitted
and stepped from Python to its own stopping rule, and PyTorch (Adam steps; L-BFGS to the
same tolerance) on the same objective and start, when torch is installed."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.measure import LAM, LAM_W, LR, counts_for, one
from ncjax import natural, stopping
from ncjax.problem import Problem


def start(counts, key, *, d, m):
    """The solver's random start (V, U, b) of a configuration, float32."""
    problem = Problem(jnp.asarray(counts, jnp.float32), LAM_W, LAM_W, 0.0)
    return natural.init(key, problem, d=d, m=m, dtype=jnp.float32)


def torch_problem(n_k, lam_W, lam_H, x0, dev):
    """F in natural coordinates (``ncjax.natural.objective``) as a torch closure over
    parameters initialised at x0 = (V, U, b)."""
    import torch

    n = torch.tensor(np.asarray(n_k), dtype=torch.float32, device=dev)
    K, m = x0.U.shape[0], x0.U.shape[1]
    lam = float(np.sqrt(lam_W * lam_H))
    w = n / m
    V, U, b = (torch.tensor(np.asarray(a), device=dev, requires_grad=True) for a in x0)
    labels = torch.arange(K, device=dev)[:, None].expand(K, m).reshape(-1)

    def f():
        logits = torch.einsum("kid,cd->kic", U, V) / w.sqrt()[:, None, None] + b
        ce = torch.nn.functional.cross_entropy(logits.reshape(K * m, K), labels,
                                               reduction="none").reshape(K, m)
        return ((w * ce.sum(1)).sum() / n.sum()
                + lam / 2 * ((V ** 2).sum() + (U ** 2).sum()))
    return f, [V, U, b]


def torch_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def torch_adam(K, d, m, steps, *, repeats):
    """One configuration, ``steps`` torch.optim.Adam steps on the same F and start."""
    import torch

    dev = torch_device()
    x0 = start(counts_for(K, m), jax.random.key(0), d=d, m=m)
    f, params = torch_problem(counts_for(K, m), LAM_W, LAM ** 2 / LAM_W, x0, dev)
    opt = torch.optim.Adam(params, lr=LR)

    def run():
        for _ in range(steps):
            opt.zero_grad()
            f().backward()
            opt.step()
        torch_sync()
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return steps / float(np.median(times))


# ---------------------------------------------------------------------- time to solution


def loop_to_tolerance(counts, lam, idx, *, d, m):
    """Per configuration: the solver's L-BFGS body jitted, stepped from Python until its
    own stopping rule ends it (the default gtol, ftol, max_steps), one host check a step."""
    K = counts.shape[1]
    gtol, ftol = stopping.GTOL["float32"], stopping.FTOL["float32"]
    conv, t0 = 0, time.perf_counter()
    for i in idx:
        carry, step = one(K, d, m, optimizer="lbfgs", dtype="float32", gtol=gtol,
                          ftol=ftol, max_steps=stopping.DEFAULT_MAX_STEPS,
                          counts=counts[i:i + 1], lam=lam[i:i + 1], seed=0, key_index=i)
        if i == idx[0]:
            # compile, untimed: the first step's output types (weak types) differ from
            # the start's, so the second step compiles once more
            jax.block_until_ready(step(step(carry)))
            t0 = time.perf_counter()
        c = carry
        while int(c.status) < 0:
            c = step(c)
        conv += int(c.status) == stopping.CONVERGED
    return conv, time.perf_counter() - t0


def torch_lbfgs_to_tolerance(counts, lam_W, lam_H, idx, *, d, m):
    """Per configuration: torch.optim.LBFGS (strong Wolfe, history 10), one iteration a
    call, until the solver's stopping rule (float32 defaults) ends it: ‖∇F‖ ≤ gtol·‖∇F(x₀)‖,
    or F moved by at most ftol·max(|F|, 1) over the last WINDOW iterations (checked every
    WINDOW iterations; the solver counts evaluations), or max_steps iterations."""
    import torch

    dev = torch_device()
    gtol, ftol = stopping.GTOL["float32"], stopping.FTOL["float32"]
    conv, t = 0, 0.0
    for i in idx:
        key = natural.start_key(0, int(i))
        x0 = start(counts[i], key, d=d, m=m)
        f, params = torch_problem(counts[i], float(lam_W[i]), float(lam_H[i]), x0, dev)
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0,
                                tolerance_change=0.0)

        def closure():
            opt.zero_grad()
            loss = f()
            loss.backward()
            return loss

        def gnorm():
            return float(torch.sqrt(sum((p.grad ** 2).sum() for p in params)))
        torch_sync()
        t0 = time.perf_counter()
        value_ref = float(closure())
        target = gtol * gnorm()
        flat = False
        for it in range(1, stopping.DEFAULT_MAX_STEPS + 1):
            opt.step(closure)
            g = gnorm()
            if g <= target or not np.isfinite(g):
                break
            if it % stopping.WINDOW == 0:
                with torch.no_grad():
                    value = float(f())
                flat = abs(value_ref - value) <= ftol * max(abs(value), 1.0)
                if flat:
                    break
                value_ref = value
        torch_sync()
        t += time.perf_counter() - t0
        conv += bool(g <= target or flat)
    return conv, t
