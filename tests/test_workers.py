"""Independent workers (``--worker i/n``, ``--workers N``; ``ncjax.claims``): they finish
the grid bit for bit as one process does, a SIGKILLed worker's claim expires and another
takes its chunk, nothing is committed twice, and bad worker options are one line, exit 2."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ncjax import claims, sweep
from ncjax.cli import main
from tests.conftest import TWO_CLUSTER

SPEC = TWO_CLUSTER + """
[axes]
n_B = {lin = [10, 90, 4]}
lam = {log = [1e-3, 1e-1, 6]}
[solver]
method = "convex"
dtype = "float64"
[run]
chunk_size = 4
"""
CELLS = 24


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("workers")
    (d / "s.toml").write_text(SPEC)
    return d / "s.toml", sweep.run(d / "s.toml", d / "ref", quiet=True)


def _identical(a, b):
    assert a.done.all() and (a.status == b.status).all()
    for k in b.fields:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _committed_once(out):
    """Every cell in exactly one committed index entry, one per chunk of the plan."""
    cells = [c for p in (out / "index").iterdir()
             for c in json.loads(p.read_text())["cells"]]
    assert sorted(cells) == list(range(CELLS))
    assert sorted(int(p.stem) for p in (out / "index").iterdir()) == list(range(CELLS // 4))
    assert [p.name for p in (out / "claims").iterdir()] == []


def _worker(spec, out, i, n, *extra):
    return subprocess.Popen([sys.executable, "-m", "ncjax", "sweep", str(spec), "--out",
                             str(out), "--worker", f"{i}/{n}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_workers_give_the_one_process_grid(reference, tmp_path):
    spec, ref = reference
    out = tmp_path / "run"
    procs = [_worker(spec, out, i, 2) for i in range(2)]
    res = [p.communicate(timeout=180) for p in procs]
    for p, (o, e) in zip(procs, res):
        assert p.returncode == 0, e
        assert f"status converged {CELLS}" in o  # each prints the finished grid
    assert "chunk 0:" in res[0][1] and "chunk 1:" in res[1][1]  # each took its own first
    _identical(sweep.load(out), ref)
    _committed_once(out)


def test_a_killed_worker_is_taken_over(reference, tmp_path):
    """Four workers, a short claim timeout; worker 3 is SIGKILLed while it holds a claim
    (its first chunk, compiling); the others take the claim once it expires."""
    spec, ref = reference
    out = tmp_path / "run"
    procs = [_worker(spec, out, i, 4, "--claim-timeout", "2") for i in range(4)]
    victim, deadline = procs[3], time.time() + 120
    while True:  # a claim of the victim's
        held = [p for p in (out / "claims").glob("[0-9]*")] if (out / "claims").is_dir() else []
        if any(f'"pid": {victim.pid},' in p.read_text() for p in held):
            break
        assert victim.poll() is None and time.time() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    res = [p.communicate(timeout=180) for p in procs[:3]]
    for p, (o, e) in zip(procs, res):
        assert p.returncode == 0, e
    assert any("took over the claim of a worker silent for more than 2 s" in e
               for _, e in res), [e for _, e in res]
    _identical(sweep.load(out), ref)
    _committed_once(out)


def test_workers_option_end_to_end(reference, tmp_path):
    spec, ref = reference
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "ncjax", "sweep", str(spec), "--out", str(out),
                        "--workers", "2"], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    assert f"status converged {CELLS}" in p.stdout and p.stdout.count("status converged") == 1
    assert "worker 0/2" in p.stderr and "worker 1/2" in p.stderr
    _identical(sweep.load(out), ref)
    _committed_once(out)
    # a finished run: resume with workers has nothing to do
    p = subprocess.run([sys.executable, "-m", "ncjax", "resume", str(out), "--workers", "2"],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and f"status converged {CELLS}" in p.stdout, p.stderr


@pytest.mark.parametrize("args, says", [
    (["--worker", "two"], "--worker: expected i/n"),
    (["--worker", "2/2"], "--worker: expected 0 <= i < n"),
    (["--worker", "0/0"], "--worker: expected 0 <= i < n"),
    (["--workers", "0"], "--workers: expected a number of processes >= 1"),
    (["--worker", "0/2", "--workers", "2"], "--worker and --workers: give one"),
    (["--worker", "0/2", "--coordinator", "localhost:1", "--num-processes", "2",
      "--process-id", "0"], "exclude each other"),
    (["--workers", "2", "--distributed"], "exclude each other"),
    (["--worker", "0/2", "--claim-timeout", "0"], "--claim-timeout: expected seconds > 0"),
])
def test_bad_worker_options_are_one_line(reference, tmp_path, capsys, args, says):
    out = tmp_path / "run"
    assert main(["sweep", str(reference[0]), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ncjax: error: ") and says in err[0], err
    assert not out.exists()  # nothing written
    assert main(["resume", str(tmp_path), *args]) == 2


def test_workers_join_one_run_of_one_spec(reference, tmp_path):
    """The first worker makes the run, the next adopts it; another spec, another chunk
    size or a live single-process writer is refused; a single process refuses a run that
    live workers hold."""
    spec, _ = reference
    out = tmp_path / "run"
    r, grid = sweep.join(spec, out)
    assert r.chunk_size == 4 and grid.shape == (4, 6)
    assert sweep.join(spec, out)[0].meta == r.meta  # adopted, nothing rewritten
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("n_A = 100", "n_A = 200"))
    with pytest.raises(sweep.RunError, match="holds a run of another spec"):
        sweep.join(other, out)
    with pytest.raises(sweep.RunError, match="its chunk size is 4, not 8"):
        sweep.join(spec, out, chunk_size=8)
    (out / ".lock").write_text(str(os.getpid()))
    with pytest.raises(sweep.RunError, match="a single process .* is writing"):
        sweep.resume(out, worker=(0, 1), quiet=True)
    (out / ".lock").unlink()
    held = claims.Claims(out, (0, 2)).take(3)
    with pytest.raises(sweep.RunError, match="1 worker.s. are at work on this run"):
        sweep.resume(out, quiet=True)
    held.release()


def test_claims_are_exclusive_and_expire(tmp_path):
    a, b = claims.Claims(tmp_path, (0, 2), timeout=0.5), claims.Claims(tmp_path, (1, 2), 0.5)
    ca = a.take(0)
    assert ca is not None and ca.owned() and b.take(0) is None
    time.sleep(0.7)  # no heartbeat: expired
    cb = b.take(0)
    assert cb is not None and cb.took_over and cb.owned() and not ca.owned()
    ca.release()  # not its claim any more: left alone
    assert cb.owned()
    with b.heartbeat():  # refreshed while held
        time.sleep(0.7)
        assert a.take(0) is None
    assert not (tmp_path / "claims" / "0").exists()  # released on the way out
    assert claims.order(7, 1, 3) == [1, 4, 6, 5, 3, 2, 0]
