"""The vanishing-minority phase along λ (issue 21, item 5): where the minority's mean logits
become exactly 0 while the majority's are not, for 5 + 5 classes over the ratio and λ_b,
and for each group of the committed group profiles; with the collapse and Z = 0
thresholds beside it. Prints a markdown table (``ncjax.thresholds``, rtol 1e-6).

    python benchmarks/experiments/vanishing.py
"""

from pathlib import Path

import numpy as np

import ncjax
from ncjax import spec

RATIOS = (2.5, 5.0, 10.0, 20.0, 50.0, 100.0)
LAM_B = (0.0, 0.01, 0.02)
ROOT = Path(__file__).resolve().parents[2]


def group_studies():
    """name → ([K_g, n_g] pairs, λ_b) of the committed group studies (sweeps/groups*.toml)."""
    out = {}
    for p in sorted((ROOT / "sweeps").glob("groups*.toml")):
        sp = spec.load(p)
        out[p.stem] = (sp.problem["groups"], sp.problem.get("lam_b", 0.0))
    return out


def main():
    ncjax.configure_cpu()
    cfg = [(r, lb) for r in RATIOS for lb in LAM_B]
    counts = np.array([[500.0] * 5 + [500.0 / r] * 5 for r, _ in cfg])
    t = ncjax.thresholds(counts, np.array([lb for _, lb in cfg]))
    print("| ratio | λ_b | collapse λ* | vanish λ_v | zero λ_0 | λ_v/λ* | (λ_v−λ*)/(λ_0−λ*) |")
    print("|---|---|---|---|---|---|---|")
    for (r, lb), c, v, z in zip(cfg, t.collapse[:, 1], t.vanish[:, 1], t.zero):
        print(f"| {r:g} | {lb:g} | {c:.7g} | {v:.7g} | {z:.7g} | {v / c:.5f} | "
              f"{(v - c) / (z - c):.5f} |")
    print()
    print("| profile | group (K_g × n_g) | collapse | vanish | zero |")
    print("|---|---|---|---|---|")
    for name, (steps, lb) in group_studies().items():
        n = np.concatenate([[c] * k for k, c in steps]).astype(float)
        t = ncjax.thresholds(n, lb)
        for (k, c), col, van in zip(steps, t.collapse, t.vanish):
            print(f"| {name} | {k} × {c:g} | {col:.7g} | {van:.7g} | {t.zero:.7g} |")


if __name__ == "__main__":
    main()
