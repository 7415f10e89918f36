#!/usr/bin/env bash
# `ncjax sweep sweeps/certified.toml` and the README main job (sweeps/quick.toml), at BASE
# (a git worktree, PYTHONPATH pointing at it) and at the checkout, one after the other;
# wall time of each command, then both runs loaded with ncjax.load and compared.
#   bash benchmarks/before_after.sh BASE [WORK_DIR]     (in the checkout's venv)
set -euo pipefail
base=$1; work=${2:-/tmp/ncjax-before-after}
here=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$work" && mkdir -p "$work"
git -C "$here" worktree add --detach "$work/old" "$base" > /dev/null
trap 'git -C "$here" worktree remove --force "$work/old"' EXIT
for spec in certified quick; do
  ( cd "$work/old" && /usr/bin/time -f "before $spec: %e s" env PYTHONPATH="$work/old" \
      python -m ncjax sweep "sweeps/$spec.toml" --out "$work/${spec}_before" --quiet )
  ( cd "$here" && /usr/bin/time -f "after $spec: %e s" \
      python -m ncjax sweep "sweeps/$spec.toml" --out "$work/${spec}_after" --quiet )
done
python - "$work" <<'PY'
import sys
import numpy as np
import ncjax
work = sys.argv[1]
for spec in ("certified", "quick"):
    old, new = ncjax.load(f"{work}/{spec}_before"), ncjax.load(f"{work}/{spec}_after")
    print(spec)
    print("  status equal in", np.mean(old.status == new.status), "of cells;",
          dict(zip(*np.unique(new.status, return_counts=True))))
    for name in ("metrics.phase", "steps"):
        a, b = np.asarray(old.fields[name]), np.asarray(new.fields[name])
        print(f"  {name} equal in {np.mean(a == b):.6f} of cells; after:",
              dict(zip(*np.unique(b, return_counts=True))))
    a, b = np.asarray(old.fields["objective"]), np.asarray(new.fields["objective"])
    print(f"  objective max relative difference {np.max(np.abs(a - b) / np.abs(a)):.3g}")
    print(f"  gap max before {np.max(old.fields['gap']):.3g}, after {np.max(new.fields['gap']):.3g}")
PY
