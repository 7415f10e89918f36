import atexit
import functools
import gc
import os
import shutil
import tempfile

import pytest

# The suite is compile-bound: almost every test compiles its own programs, and XLA's CPU
# compiler spends much of its time in LLVM's optimisation passes, which make the code it
# emits faster, not different in its math (no fast-math; the rounding of a few operations
# may differ). The suite compiles with them off unless XLA_FLAGS names a level; on the
# 2-core CPU the suite ran in 335 s against 536 s at XLA's default level 3, both passing
# (README, under the test command).
# Set before ncjax is imported, so before JAX starts its CPU backend.
_OPT = "--xla_backend_optimization_level"
if _OPT not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_OPT}=0".strip()

# Many tests compile the same programs (a K, a dtype, a loss) again, in a worker and in
# the CLI's subprocesses: JAX's persistent compilation cache, one new folder a run of the
# suite, which the controller makes and removes at exit. Each xdist worker takes a
# subfolder of its own (its CLI subprocesses, which it waits for, inherit it): JAX writes
# an entry in place, so a worker reading an entry the other is writing would find it cut
# short (docs/known-issues.md).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ncjax-tests-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("NCJAX_TEST_CACHE_SPLIT"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
        os.environ["JAX_COMPILATION_CACHE_DIR"], os.environ["PYTEST_XDIST_WORKER"])
    os.environ["NCJAX_TEST_CACHE_SPLIT"] = "1"  # a subprocess's conftest keeps it
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# pytest-xdist already runs one worker a core: ncjax.solve's helper processes
# (ncjax.cores) only where a test asks for them (tests/test_cores.py).
os.environ.setdefault("NCJAX_PROCESSES", "1")

import jax  # noqa: E402

from ncjax import dtypes  # noqa: E402
from ncjax.xla import configure_cpu  # noqa: E402

# XLA's CPU flags against the runtime's wedge (ncjax.xla; importing ncjax sets nothing):
# before the first JAX computation, so that every test and ``forced_devices_env`` has them.
configure_cpu()


# Every program XLA's CPU backend compiles holds a few memory mappings until JAX drops it,
# and a process may hold only vm.max_map_count of them (65,530 by default): a worker that
# has run most of the suite holds ~63,000, and the next compile aborts or segfaults (the
# crashes once blamed on the compilation cache, docs/known-issues.md). Dropping JAX's
# caches returns them; the persistent cache gives the programs back without compiling.
def _map_count() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return None


def _map_limit() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 65530


_MAP_BUDGET = _map_limit() // 3


@pytest.fixture(autouse=True)
def _bounded_memory_maps():
    """After each test, drop JAX's compiled programs once the process holds a third of
    the kernel's limit on memory mappings."""
    yield
    count = _map_count()
    if count is not None and count > _MAP_BUDGET:
        jax.clear_caches()
        gc.collect()


# The [problem] table of the small two-cluster specs the sweep, store, integrity, signal and
# worker tests run (2 × 100 + 2 × n_B, λ_W = 0.01); each adds its own axes and solver.
TWO_CLUSTER = """
[problem]
profile = "two_cluster"
K_A = 2
K_B = 2
n_A = 100
lam_W = 0.01
"""


def forced_devices_env(n: int) -> dict:
    """The environment of a subprocess that sees ``n`` CPU devices (XLA's forced host
    device count), with the suite's XLA flags."""
    return {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} "
                                      f"--xla_force_host_platform_device_count={n}"}


@pytest.fixture
def x64():
    """Run the test body with float64 enabled in JAX."""
    with dtypes.x64(True):
        yield


@functools.cache
def convex_optimum(counts: tuple, lam: float, lam_b: float):
    """cvxpy's (P*, Z*, b*) for the convex form, cached across tests."""
    from ncjax.reference import solve_convex
    return solve_convex(list(counts), lam, lam_b)


def run_spec(tmp_path_factory, text: str, name: str):
    """Sweep the spec ``text`` in a fresh temporary folder; returns the run directory."""
    from ncjax import sweep
    d = tmp_path_factory.mktemp(name)
    (d / "spec.toml").write_text(text)
    sweep.run(d / "spec.toml", d / "run", quiet=True)
    return d / "run"
