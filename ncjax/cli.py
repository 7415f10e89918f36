"""Command line: ``ncjax solve …`` (also ``python -m ncjax``).

Bad input ends with one line ``ncjax: error: …`` on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

import numpy as np

from ncjax._validate import InputError, NCJaxWarning


def parse_counts(text: str) -> list[float]:
    """'500,500,100' or '2x500,3x100' (k copies of a count) -> [500.0, 500.0, 100.0, …]."""
    out = []
    for item in text.split(","):
        item = item.strip()
        reps, _, value = item.rpartition("x")
        try:
            k = int(reps) if reps else 1
            n = float(value)
        except ValueError:
            raise InputError(f"--counts: cannot read {item!r}; give numbers like "
                             "500,500,100 or 2x500,3x100") from None
        if k < 1:
            raise InputError(f"--counts: a repeat must be >= 1, got {item!r}")
        out += [n] * k
    return out


def _jsonable(x):
    """numpy → plain Python; NaN/inf → None so the output is strict JSON."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def result_json(r) -> dict:
    """The CLI's JSON object for one solved configuration."""
    return _jsonable({
        "objective": r.objective, "status": str(r.status), "converged": bool(r.converged),
        "steps": int(r.steps), "grad_norm": r.grad_norm, "Z": r.Z, "b": r.b,
        "metrics": r.metrics, "theory": r.theory,
        "config": {"counts": r.counts, "lam_W": r.lam_W, "lam_H": r.lam_H, "lam_b": r.lam_b,
                   "seed": r.seed, "convention": "half"},
    })


def summary(r) -> str:
    """A readable report of one solved configuration."""
    m, t = r.metrics, r.theory
    K = r.counts.shape[-1]
    yes = lambda v: "yes" if v else "no"
    lines = [
        f"UFM  K={K}  N={r.counts.sum():g}  counts={np.array2string(r.counts, separator=',')}",
        f"     lam_W={r.lam_W:g}  lam_H={r.lam_H:g}  lam_b={r.lam_b:g} (half convention)"
        f"  lam=sqrt(lam_W lam_H)={t['lam']:.6g}  c=lam*N={t['c']:.6g}",
        f"status     {r.status} after {r.steps} steps, |grad| = {r.grad_norm:.2e}",
        f"objective  F = {r.objective:.10g}   convex P(Z,b) = {m['convex_objective']:.10g}",
        f"NC1        {m['nc1']:.3e}   within-class spread {m['within_spread']:.3e}",
        f"minority   spread Z {m['minority_spread_Z']:.3e}  W {m['minority_spread_W']:.3e}"
        f"  H {m['minority_spread_H']:.3e}",
        f"           collapsed (measured) {yes(m['minority_collapsed'])}"
        f"   predicted {yes(t['minority_collapse'])}  (lam* = sqrt(n_B)/N = {t['lam_star']:.6g})",
        f"cosines Z  within A {m['cos_Z_AA']:+.4f}  within B {m['cos_Z_BB']:+.4f}"
        f"  A-B {m['cos_Z_AB']:+.4f}   (ETF {t['etf_cosine']:+.4f})",
        "Z (column k = W h_k):",
        np.array2string(r.Z, precision=3, suppress_small=True, max_line_width=120),
    ]
    return "\n".join(lines)


def _solve(args) -> int:
    from ncjax.solver import solve  # imported here so --help stays fast

    counts = parse_counts(args.counts)
    r = solve(counts, args.lam_W, args.lam_H, args.lam_b, d=args.d, m=args.m, seed=args.seed,
              convention=args.convention, optimizer=args.optimizer, max_steps=args.max_steps,
              gtol=args.gtol, dtype="float64" if args.x64 else "float32")
    print(json.dumps(result_json(r)) if args.json else summary(r))
    return 0


def _range(text: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"{name}: expected LO:HI, got {text!r}") from None
    if not 0 < lo < hi or not math.isfinite(hi):
        raise InputError(f"{name}: expected 0 < LO < HI, got {text!r}")
    return lo, hi


def _phase(args) -> int:
    """Solve an (n_B, λ) grid of two-cluster problems in one batch and draw it."""
    import time
    from pathlib import Path

    from ncjax import plot, profiles, theory
    from ncjax.solver import solve

    size = args.size
    if size < 2:
        raise InputError(f"--size must be >= 2, got {size}")
    n_B = np.linspace(*_range(args.n_B, "--n-B"), size)
    lam = np.geomspace(*_range(args.lam, "--lam"), size)
    NB, LAM = np.meshgrid(n_B, lam)  # (ny, nx): rows are λ, columns n_B
    counts = np.stack([profiles.two_cluster(args.K_A, args.n_A, args.K_B, nb)
                       for nb in NB.ravel()])
    lam_W = 0.01  # λ_H = λ²/λ_W so that sqrt(λ_W λ_H) = λ; the optimum depends on λ only
    print(f"solving {counts.shape[0]} configurations (K_A={args.K_A}, n_A={args.n_A:g}, "
          f"K_B={args.K_B}) in one batch ...", flush=True)
    t0 = time.perf_counter()
    r = solve(counts, lam_W, LAM.ravel() ** 2 / lam_W, args.lam_b, seed=np.arange(counts.shape[0]),
              dtype="float64" if args.x64 else "float32")
    dt = time.perf_counter() - t0
    shape = NB.shape
    spread = r.metrics["minority_spread_Z"].reshape(shape)
    measured = r.metrics["minority_collapsed"].reshape(shape)
    predicted = r.theory["minority_collapse"].reshape(shape)
    lam_star = np.asarray(theory.lam_star_two_cluster(args.K_A, args.n_A, args.K_B, n_B))
    far = np.abs(LAM / lam_star[None, :] - 1) > 0.02
    agree = (measured == predicted)[far].mean()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".npz"), n_B=n_B, lam=lam, spread=spread, collapsed=measured,
             predicted=predicted, lam_star=lam_star, objective=r.objective.reshape(shape),
             status=r.status.reshape(shape))
    lam_zero = np.sqrt(args.n_A) / (args.K_A * args.n_A + args.K_B * n_B) if args.K_A >= 2 else None
    plot.phase_diagram(n_B, lam, spread, lam_star, collapsed=measured, lam_zero=lam_zero, out=out,
                       title=f"UFM, {args.K_A}×{args.n_A:g} + {args.K_B}×$n_B$, "
                             f"$\\lambda_b$={args.lam_b:g}, {size}×{size} cells")
    print(f"{counts.shape[0]} configurations in {dt:.1f} s ({counts.shape[0] / dt:.0f}/s, "
          f"compile included); converged {r.converged.mean():.1%}")
    print(f"measured collapse agrees with lam* = sqrt(n_B)/N in {agree:.1%} of the "
          f"{far.sum()} cells farther than 2% from it")
    print(f"wrote {out} and {out.with_suffix('.npz')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncjax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve one UFM configuration and print its metrics")
    s.add_argument("--counts", required=True,
                   help="class counts n_k, e.g. 500,500,100,100,100 or 2x500,3x100")
    s.add_argument("--lam-W", dest="lam_W", type=float, required=True)
    s.add_argument("--lam-H", dest="lam_H", type=float, required=True)
    s.add_argument("--lam-b", dest="lam_b", type=float, default=0.0)
    s.add_argument("--convention", choices=["half", "paper"], default="half",
                   help="half: (lam/2)||.||^2 (default); paper: lam||.||^2")
    s.add_argument("--d", type=int, default=None, help="feature dimension (default K)")
    s.add_argument("--m", type=int, default=1, help="free features per class")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--optimizer", choices=["lbfgs", "adam", "gd"], default="lbfgs")
    s.add_argument("--max-steps", dest="max_steps", type=int, default=5000)
    s.add_argument("--gtol", type=float, default=None,
                   help="gradient tolerance relative to the start (default by dtype)")
    s.add_argument("--x64", action="store_true", help="solve in float64")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=_solve)

    ph = sub.add_parser("phase", help="solve an (n_B, lambda) grid in one batch and plot "
                                      "the minority-collapse phase diagram")
    ph.add_argument("--K-A", dest="K_A", type=int, default=5)
    ph.add_argument("--n-A", dest="n_A", type=float, default=500)
    ph.add_argument("--K-B", dest="K_B", type=int, default=5)
    ph.add_argument("--n-B", dest="n_B", default="20:400", help="LO:HI, linear grid")
    ph.add_argument("--lam", default="1e-3:8e-3", help="LO:HI, log grid of sqrt(lam_W lam_H)")
    ph.add_argument("--lam-b", dest="lam_b", type=float, default=0.0)
    ph.add_argument("--size", type=int, default=24, help="cells per axis")
    ph.add_argument("--x64", action="store_true")
    ph.add_argument("--out", default="phase.png", help="figure (.png/.pdf); data beside it")
    ph.set_defaults(run=_phase)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", NCJaxWarning)
            warnings.showwarning = lambda msg, cat, *a, **k: print(
                f"ncjax: warning: {msg}", file=sys.stderr)
            return args.run(args)
    except InputError as e:
        print(f"ncjax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
