"""SIGINT and SIGTERM during a sweep: the chunk in flight is finished and committed, one
line names the signal and the resume command, the exit status is 128 + signum, no
traceback; the resumed run is bit-identical to an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ncjax import sessions, sweep
from tests.conftest import TWO_CLUSTER

SPEC = TWO_CLUSTER + """
[axes]
n_B = {lin = [10, 90, 6]}
lam = {log = [1e-3, 1e-1, 8]}
[solver]
method = "convex"
dtype = "float64"
[run]
chunk_size = 4
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    (d / "s.toml").write_text(SPEC)
    return d, sweep.run(d / "s.toml", d / "ref", quiet=True)


def _identical(a, b):
    return (a.status == b.status).all() and all(
        np.array_equal(a[k], b[k], equal_nan=True) for k in a.fields)


# moments after the start, seconds: while the command's modules load, within the compile
# of the first chunk, within the chunks (a loaded machine moves them along)
@pytest.mark.parametrize("signum, delay", [(signal.SIGINT, 0.3), (signal.SIGINT, 1.6),
                                           (signal.SIGINT, 3.1), (signal.SIGINT, 4.4),
                                           (signal.SIGTERM, 3.7)])
def test_a_signal_stops_after_the_chunk_in_flight(reference, signum, delay):
    d, ref = reference
    out = d / f"run-{signum}-{delay}"
    p = subprocess.Popen([sys.executable, "-m", "ncjax", "sweep", str(d / "s.toml"), "--out",
                          str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=os.environ)
    time.sleep(delay)
    p.send_signal(signum)
    _, err = p.communicate(timeout=120)
    assert "Traceback" not in err, err
    if p.returncode == 0:  # finished before the signal came
        assert _identical(sweep.load(out), ref)
        return
    assert p.returncode == 128 + signum, err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    if last.endswith("while starting; nothing was done"):  # before the run began
        assert err.strip() == last and not out.exists()
        return
    name = signal.Signals(signum).name
    if last == f"ncjax: interrupted by {name}; nothing it writes is left half-written":
        # outside the solve (the run directory being made, or the summary printed after
        # the last chunk): whatever is there resumes to the same grid
        assert not (out / ".lock").exists()
        assert _identical(sweep.resume(out, quiet=True), ref)
        return
    assert last.startswith(f"ncjax: interrupted by {signal.Signals(signum).name}: ")
    assert f"`ncjax resume {out}`" in last
    assert not (out / ".lock").exists()
    [stopped] = sessions.read(out)
    assert stopped["outcome"] == "interrupted" and stopped["end"] >= stopped["start"]
    assert stopped["pid"] == p.pid and stopped["command"][1:3] == ["sweep", str(d / "s.toml")]
    assert _identical(sweep.resume(out, quiet=True), ref)
    first, resumed = sessions.read(out)
    assert first == stopped and resumed["outcome"] == "finished" and resumed["end"]


def test_a_signal_while_the_finished_command_exits_leaves_its_status():
    """A signal after the command has returned, while the interpreter exits, is ignored:
    the status stays the command's. Here an object's finaliser takes a moment, as JAX's
    teardown does; Python has put the default handlers back by then, and without
    ``_done`` the signal kills the process (status -2, nothing printed)."""
    code = (
        "import signal, sys, time\n"
        "from ncjax.__main__ import _done\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as cli.main sets it\n"
        "class Slow:\n"
        "    def __del__(self):\n"
        "        time.sleep(2.0)\n"
        "slow = Slow()\n"
        "print('done', flush=True)\n"
        "sys.exit(_done(3))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ)
    assert p.stdout.readline().strip() == "done"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (3, "")
