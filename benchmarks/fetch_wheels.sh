#!/usr/bin/env bash
# Wheels of cvxpy and Clarabel for the lent GPU machine (Python 3.12, no network) into
# .whl/, which device_run.sh installs there: the bench's cvxpy baseline. numpy and scipy
# are left out (the machine's own serve jax), and so are scs and sparsediffpy (cvxpy
# imports and solves with Clarabel without them; they would take the carry past 64 MiB).
# Run here, then carry ".whl" with the device call; .whl/ is kept out of git
# (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -d .whl cvxpy clarabel
rm -f .whl/numpy-* .whl/scipy-* .whl/setuptools-* .whl/scs-* .whl/sparsediffpy-*
grep -qx '.whl/' .git/info/exclude 2>/dev/null || echo '.whl/' >> .git/info/exclude
du -sh .whl
