"""Sweeps: chunking does not change a cell, a SIGKILLed run resumes to the same grid,
damaged chunks are solved again, one writer per directory, the spec cannot change."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ncjax
from ncjax import solver, spec, sweep
from tests.conftest import TWO_CLUSTER, forced_devices_env

SPEC = TWO_CLUSTER + """
[axes]
n_B = [10, 40]
lam = {log = [0.01, 0.05, 3]}
seed = [0, 1, 2, 3]
[solver]
dtype = "float64"
"""
FIELDS = ("objective", "Z", "b", "grad_norm", "metrics.minority_spread_Z")


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("spec") / "tiny.toml"
    p.write_text(SPEC)
    return p


@pytest.fixture(scope="module")
def reference(spec_file, tmp_path_factory):
    """The uninterrupted run, one configuration per chunk."""
    return sweep.run(spec_file, tmp_path_factory.mktemp("ref") / "run", chunk_size=1, quiet=True)


def _same(a, b, exact=True):
    """Equal grids: bit for bit, or (other batch sizes, so other float rounding) the
    objective to 1e-12 relative and the solution to 1e-6, within the float64 solver
    tolerance (gtol 1e-9 leaves Z determined to about 1e-9)."""
    assert a.shape == b.shape
    for f in FIELDS:
        if exact:
            np.testing.assert_array_equal(a[f], b[f], err_msg=f)
        elif f == "objective":
            np.testing.assert_allclose(a[f], b[f], rtol=1e-12, err_msg=f)
        elif f != "grad_norm":
            np.testing.assert_allclose(a[f], b[f], rtol=0, atol=1e-6, err_msg=f)
    np.testing.assert_array_equal(a.status, b.status)


def test_plan_cuts_blocks_of_one_K_into_chunks(tmp_path):
    """``plan``: the cells not done, grouped by K (in K's order), each group cut into
    pieces of at most chunk_size, in index order."""
    p = tmp_path / "k.toml"
    p.write_text('[problem]\nprofile = "balanced"\nn = 10\nlam = 0.01\n'
                 '[axes]\nK = [3, 2]\nseed = [0, 1, 2]\n')
    grid = spec.expand(spec.load(p))
    assert [c.tolist() for c in sweep.plan(grid, 2)] == [[3, 4], [5], [0, 1], [2]]
    done = np.zeros(6, bool)
    done[[0, 4]] = True
    assert [c.tolist() for c in sweep.plan(grid, 2, done)] == [[3, 5], [1, 2]]
    assert [c.tolist() for c in sweep.plan(grid, 2, np.ones(6, bool))] == []


def test_chunking_does_not_change_a_cell(spec_file, reference, tmp_path):
    g = sweep.run(spec_file, tmp_path / "run", chunk_size=7, quiet=True)
    assert g.shape == (2, 3, 4) and g.done.all() and (g.status == "converged").all()
    _same(g, reference, exact=False)  # batch sizes 7 and 1
    # and a cell equals the engine's own solve of that configuration
    i = np.ravel_multi_index((1, 2, 3), g.shape)
    lam = g.axes["lam"][2]
    alone = ncjax.solve([100, 100, 40, 40], 0.01, lam**2 / 0.01, 0.0, seed=3, key_index=i,
                        dtype="float64")
    np.testing.assert_allclose(g["objective"][1, 2, 3], alone.objective, rtol=1e-12)
    sub = g.sel(n_B=40, seed=3)
    assert list(sub.axes) == ["lam"] and sub["objective"].shape == (3,)


def _indexed(out: Path, step: int) -> bool:
    """Whether chunk ``step`` of the run ``out`` is committed with its checksums."""
    try:
        return "files" in json.loads((out / "index" / f"{step}.json").read_text())
    except (OSError, ValueError):
        return False


def test_sigkill_then_resume_gives_the_uninterrupted_grid(spec_file, reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ncjax", "sweep", str(spec_file),
                             "--out", str(out), "--chunk-size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not _indexed(out, 0):  # chunk 0 committed and its checksums recorded
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = sweep.load(out)
    n_before = int(partial.done.sum())
    assert 1 <= n_before < 24, n_before  # killed mid-run
    missing = ~partial.done
    assert np.isnan(partial["objective"][missing]).all()
    assert (partial.status[missing] == "missing").all()
    g = sweep.resume(out, quiet=True)
    _same(g, reference)  # identical: same chunking, same programs
    assert len(list((out / "chunks").iterdir())) == 24  # nothing solved twice
    assert len(list((out / "index").iterdir())) == 24 and not (out / "damaged").exists()


def test_damaged_chunk_is_detected_and_solved_again(spec_file, reference, tmp_path, capsys):
    out = tmp_path / "run"
    sweep.run(spec_file, out, chunk_size=5, quiet=True)
    newest = out / "chunks" / "4"
    for f in newest.rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"garbage")
    g = sweep.resume(out)
    assert "chunk 4 is damaged" in capsys.readouterr().err
    assert (out / "damaged" / "4").is_dir()  # set aside, not deleted
    _same(g, reference, exact=False)


def test_one_writer_per_directory(spec_file, tmp_path):
    out = tmp_path / "run"
    sweep.run(spec_file, out, chunk_size=24, quiet=True)
    (out / ".lock").write_text(str(os.getpid()))  # a live writer
    with pytest.raises(sweep.RunError, match="another process"):
        sweep.resume(out, quiet=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(str(dead.pid))  # a writer that died: taken over
    assert sweep.resume(out, quiet=True).done.all()
    assert not (out / ".lock").exists()


def test_changed_spec_and_existing_run_are_refused(spec_file, tmp_path):
    out = tmp_path / "run"
    sweep.run(spec_file, out, chunk_size=24, quiet=True)
    with pytest.raises(sweep.RunError, match="already holds a run"):
        sweep.run(spec_file, out, quiet=True)
    (out / "spec.toml").write_text(SPEC.replace("n_A = 100", "n_A = 200"))
    with pytest.raises(sweep.RunError, match="was changed"):
        sweep.resume(out)
    with pytest.raises(sweep.RunError, match="not a run directory"):
        sweep.load(tmp_path)


def test_command_line_sweep_show_plot(spec_file, tmp_path, capsys):
    from ncjax.cli import main

    out = tmp_path / "run"
    assert main(["sweep", str(spec_file), "--out", str(out), "--chunk-size", "12"]) == 0
    assert "status converged 24" in capsys.readouterr().out
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "axis n_B" in text and "they differ in 0" in text and "certified gap" in text
    png = tmp_path / "phase.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotting the slice {'seed': 0}" in capsys.readouterr().err
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_to_xarray(reference):
    ds = reference.to_xarray()
    assert list(ds["objective"].dims) == ["n_B", "lam", "seed"]
    np.testing.assert_array_equal(ds["objective"].values, reference["objective"])
    sel = ds["objective"].sel(n_B=40, seed=3).values
    np.testing.assert_array_equal(sel, reference.sel(n_B=40, seed=3)["objective"])


def test_four_devices_give_the_one_device_grid(spec_file, reference, tmp_path):
    """The same spec on 4 forced host devices (each chunk sharded over them) and on 1."""
    out = tmp_path / "run"
    env = forced_devices_env(4)
    p = subprocess.run([sys.executable, "-m", "ncjax", "sweep", str(spec_file), "--out",
                        str(out), "--chunk-size", "6"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "sharded over 4 cpu device(s)" in p.stderr
    _same(sweep.load(out), reference, exact=False)


def test_a_second_writer_process_is_refused(spec_file, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "ncjax", "sweep", str(spec_file),
                              "--out", str(out), "--chunk-size", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / ".lock").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.005)
    second = subprocess.run([sys.executable, "-m", "ncjax", "resume", str(out)],
                            capture_output=True, text=True)
    first_rc = first.wait()
    assert second.returncode == 2
    assert f"another process (pid {first.pid}) is writing" in second.stderr
    assert first_rc == 0 and sweep.load(out).done.all()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_multi_host_launch(spec_file, reference, tmp_path):
    """The README's multi-host launch, two processes on this machine with 2 forced CPU
    devices each: one global mesh of 4 devices, each process solves its addressable
    shards, orbax writes the chunks from both; the grid equals the one-process run."""
    out, port = tmp_path / "run", _free_port()
    env = forced_devices_env(2)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "ncjax", "sweep", str(spec_file), "--out", str(out),
         "--chunk-size", "6", "--coordinator", f"localhost:{port}", "--num-processes", "2",
         "--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    res = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, res):
        assert p.returncode == 0, e
    assert "sharded over 4 cpu device(s) in 2 process(es)" in res[0][1]
    assert "status converged 24" in res[0][0] and "status" not in res[1][0]  # 0 reports
    chunk = next((out / "chunks").iterdir())
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= {q.name for q in (chunk / "default").iterdir()}
    _same(sweep.load(out), reference, exact=False)


def test_a_chunk_that_does_not_fit_is_split_and_retried(spec_file, reference, tmp_path,
                                                       monkeypatch, capsys):
    """A device that runs out of memory above 5 configurations: the chunk of 12 is retried
    as 6 (still too many), then 3; the grid is the uninterrupted one, nothing lost. (One
    process: the sweep solves by ``solver.solve_host``.)"""
    real, widths = solver.solve_host, []

    def small_device(counts, *a, **k):
        widths.append(len(counts))
        if len(counts) > 5:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return real(counts, *a, **k)

    monkeypatch.setattr(solver, "solve_host", small_device)
    g = sweep.run(spec_file, tmp_path / "run", chunk_size=12)
    err = capsys.readouterr().err
    assert "a chunk of 12 configurations did not fit in device memory; retrying in chunks of 6" in err
    assert "retrying in chunks of 3" in err
    assert widths[:3] == [12, 6, 3] and set(widths[2:]) == {3}
    _same(g, reference, exact=False)
    # other errors are not retried
    monkeypatch.setattr(solver, "solve_host",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        sweep.run(spec_file, tmp_path / "run2", chunk_size=12, quiet=True)


def test_chunks_are_sized_to_device_memory(spec_file, tmp_path, monkeypatch, capsys):
    """With room for 5 configurations per device, chunks of 12 become chunks of 5."""
    per = sweep.bytes_per_config(4, 4, 1, 10, "float64")
    # the bytes model: ((2*10 + 12) * (K d + K m d + K) + 32 K^2) * 8 for K = d = 4, m = 1
    assert per == ((2 * 10 + 12) * (16 + 16 + 4) + 32 * 16) * 8
    monkeypatch.setattr(sweep, "memory_budget", lambda devices: 5 * per + 7)
    g = sweep.run(spec_file, tmp_path / "run", chunk_size=12)
    assert "chunks of 5 configurations (not 12)" in capsys.readouterr().err
    assert len(list((tmp_path / "run" / "chunks").iterdir())) == 5  # 24 cells, one K
    assert g.done.all()


def test_convex_method_sweep_is_certified(spec_file, reference, tmp_path):
    """[solver] method = "convex": every cell certified (gap ≤ 1e-8), the same optimum as
    the factored solves of the reference run (their own certified gaps are ≤ 1e-7), and the
    same collapse decisions."""
    spec = tmp_path / "convex.toml"
    spec.write_text(SPEC + 'method = "convex"\npool = 4\n')
    g = sweep.run(spec, tmp_path / "run", chunk_size=10, quiet=True)
    assert g.done.all() and (g.status == "converged").all()
    assert (g["gap"] <= 1e-8).all() and (reference["gap"] <= 1e-7).all()
    np.testing.assert_allclose(g["objective"], reference["objective"], rtol=1e-7)
    assert np.array_equal(g["metrics.minority_collapsed"], reference["metrics.minority_collapsed"])


def test_show_counts_the_cells_of_each_phase(reference):
    """The index's phase counts (``ncjax show``) are those of the stored metrics.phase, and
    the cells past "none" are the cells measured collapsed (one rule, metrics.phase)."""
    from ncjax import names
    g = reference
    s = g.overview()  # from the index's tallies
    code = g["metrics.phase"].ravel()
    assert s["phases"] == {p: int(np.sum(code == i)) for i, p in enumerate(names.PHASES)}
    assert sum(s["phases"].values()) == g.done.sum()
    assert s["collapse"]["measured"] == sum(s["phases"].values()) - s["phases"]["none"]
    from ncjax import report
    assert ("Cells by phase (`metrics.phase`): " + ", ".join(
        f"{p} {c}" for p, c in s["phases"].items()) + ".") in report.render(g)
