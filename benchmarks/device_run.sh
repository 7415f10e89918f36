#!/usr/bin/env bash
# One call on a lent GPU machine (the workplace's `device` tool; its Python has jax, optax,
# orbax, torch, pytest and pytest-xdist, no network): versions; the test suite on that
# machine's JAX (CPU backend) if TESTS_S > 0; the Adam-step probe
# (benchmarks/experiments/step_probe.py) if PROBE_S > 0; then the full benchmark harness
# (benchmarks/bench.py) on the GPU. Every line of the probe and the bench is stamped with
# the time of day. Writes under $OUT: pytest.log, probe.log, probe/{probe.json,probe.md},
# bench.log and bench/{bench.json,bench.md,bench.png,step_adam_hlo.txt,
# step_adam_fused_hlo.txt}; the bench's one-kernel section (benchmarks/experiments/fused.py)
# is in bench.json under "fused". Wheels under .whl/ (cvxpy and Clarabel for Python 3.12,
# from benchmarks/fetch_wheels.sh; carried) are installed first.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
stamp() { while IFS= read -r line; do printf '%(%H:%M:%S)T %s\n' -1 "$line"; done; }
python3 -c "import sys, jax, optax, orbax.checkpoint, torch; print(sys.version.split()[0], 'jax', jax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
if [ "${TESTS_S:-0}" -gt 0 ]; then
  JAX_PLATFORMS=cpu timeout "$TESTS_S" python3 -m pytest -q -n 14 -p no:cacheprovider tests \
    > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?"; tail -25 "$OUT/pytest.log"
fi
if [ "${PROBE_S:-0}" -gt 0 ]; then
  timeout "$PROBE_S" python3 benchmarks/experiments/step_probe.py --out "$OUT/probe" ${PROBE_ARGS:-} 2>&1 \
    | stamp | tee "$OUT/probe.log" | grep -v '^[0-9:]* |'
  echo "probe rc=${PIPESTATUS[0]}"
fi
timeout "${BENCH_S:-300}" python3 benchmarks/bench.py --out "$OUT/bench" ${BENCH_ARGS:-} 2>&1 \
  | stamp | tee "$OUT/bench.log" | grep -v '^[0-9:]* |'
echo "bench rc=${PIPESTATUS[0]}"
