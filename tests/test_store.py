"""The run directory without a solve: its manifest and their checks, the lock, the chunk
format (index -1 for padding rows, dropped on reading; nested metrics flattened), the
index entries and checksums, and load of a partly written grid (missing cells NaN / -1 /
"missing")."""

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ncjax import chunks as chunks_mod
from ncjax import files, sessions
from ncjax import reading, spec, store
from ncjax.stopping import STATUS_NAMES
from tests.conftest import TWO_CLUSTER

SPEC = TWO_CLUSTER + """
lam_H = 0.02
[axes]
n_B = [10, 40]
seed = [0, 1, 2]
"""


def _fake_result(rows: int, K: int = 4, d: int = 4) -> dict:
    """What ``solver.solve_sharded`` returns for ``rows`` configurations, in shape and
    dtype (numbers: row r holds r), H and an unsaved key included."""
    r = np.arange(rows)
    full = lambda *s: np.broadcast_to(r.reshape((rows,) + (1,) * len(s)), (rows,) + s)
    return {"objective": r.astype(np.float64), "gap": r * 1e-9, "grad_norm": r * 1e-10,
            "steps": r.astype(np.int32), "status": (r % len(STATUS_NAMES)).astype(np.int32),
            "Z": full(K, K).astype(np.float64), "b": full(K).astype(np.float64),
            "class_means": full(K, d).astype(np.float64), "W": full(K, d).astype(np.float64),
            "H": full(K, 1, d).astype(np.float64),
            "metrics": {"nc1": r.astype(np.float64), "collapsed": r % 2 == 0},
            "theory": {"spread": r * 0.5}, "unsaved": r}


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    sp = spec.load(tmp_path / "spec.toml")
    out = tmp_path / "run"
    store.create_run(out, sp, 4, tmp_path / "spec.toml", (2, 3))
    return out, sp


def test_create_and_open_run(run_dir, tmp_path):
    out, sp = run_dir
    assert (out / "spec.toml").read_text() == SPEC
    meta = json.loads((out / "manifest.json").read_text())
    assert set(meta) == {"format", "spec_sha256", "grid_shape", "cells", "chunk_size",
                         "source", "loss", "versions", "commit"}
    assert meta["loss"] == {"name": "ce", "params": {}, "axes": []}
    assert meta["chunk_size"] == 4 and meta["source"] == str(tmp_path / "spec.toml")
    assert meta["grid_shape"] == [2, 3] and meta["cells"] == 6 and meta["format"] == 1
    import importlib.metadata

    import ncjax
    assert meta["versions"] == {"ncjax": ncjax.__version__, **{
        k: importlib.metadata.version(d) for k, d in (
            ("jax", "jax"), ("jaxlib", "jaxlib"), ("optax", "optax"),
            ("orbax", "orbax-checkpoint"), ("numpy", "numpy"))}}
    assert meta["commit"] == _head_commit()
    r = store.open_run(out)
    assert r.meta == meta and r.kind == "run" and r.chunk_size == 4
    assert r.spec.text == SPEC and r.spec.path == str(out / "spec.toml")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "spec.toml"]
    with pytest.raises(store.RunError, match="already holds a run"):
        store.create_run(out, sp, 4, "x", (2, 3))
    (out / "spec.toml").write_text(SPEC + "# edited\n")
    with pytest.raises(store.RunError, match="was changed after the run started"):
        store.open_run(out)
    with pytest.raises(store.RunError, match="not a run directory"):
        store.open_run(tmp_path)


def _head_commit():
    """The checkout's HEAD read from .git's files (not by git), "+dirty" left as
    ``store.commit`` found it; None outside a checkout."""
    git = store.SOURCE / ".git"
    if not git.is_dir():
        return store.commit()  # a worktree's .git file, or no checkout: nothing to compare
    head = (git / "HEAD").read_text().strip()
    if head.startswith("ref: "):
        ref = head[5:]
        loose = git / ref
        head = loose.read_text().strip() if loose.exists() else next(
            line.split()[0] for line in (git / "packed-refs").read_text().splitlines()
            if line.endswith(" " + ref))
    found = store.commit()
    return head + ("+dirty" if found.endswith("+dirty") else "")


def test_sessions_are_one_record_each(run_dir):
    out, _ = run_dir
    assert sessions.read(out) == [] and sessions.describe(out) is None
    a = sessions.start(out, ["cpu:cpu", "cpu:cpu"])
    killed = json.loads(a.read_text())  # a session killed before its end: no end
    assert killed["end"] is None and killed["outcome"] == "running"
    assert killed["pid"] == os.getpid() and killed["host"] == socket.gethostname()
    assert killed["versions"] == store.versions() and killed["commit"] == _head_commit()
    sessions.end(a, "interrupted")
    b = sessions.start(out, ["cpu:cpu"], worker="0/2")
    sessions.end(b, "finished")
    first, last = sessions.read(out)
    assert first["outcome"] == "interrupted" and last["worker"] == "0/2"
    assert first["start"] <= first["end"] <= last["start"] <= last["end"]
    started = last["start"][:19].replace("T", " ")
    assert sessions.describe(out).startswith(f"  sessions 2; the last started {started} UTC")
    assert "finished, on 1 × cpu:cpu" in sessions.describe(out)
    assert store.open_run(out).kind == "run"  # sessions/ is part of a run


def test_lock(tmp_path):
    mine = lambda: json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    with store.Lock(tmp_path):
        assert mine()
        with pytest.raises(store.RunError, match=f"another process \\(pid {os.getpid()}\\)"):
            store.Lock(tmp_path).__enter__()
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(str(dead.pid))  # an earlier ncjax's lock, writer gone
    with store.Lock(tmp_path):
        assert mine()
    assert not (tmp_path / ".lock").exists()


def test_lock_of_a_reused_pid_or_another_host(tmp_path):
    """A live pid with another start time is an unrelated process that reuses the pid of
    a dead writer: taken over. A lock of another host cannot be judged here: refused, its
    host named."""
    host = socket.gethostname()
    (tmp_path / ".lock").write_text(json.dumps(
        {"pid": os.getppid(), "host": host, "start": "1"}))  # alive, but not that process
    with store.Lock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    (tmp_path / ".lock").write_text(json.dumps(
        {"pid": os.getpid(), "host": host + "-elsewhere", "start": None}))
    with pytest.raises(store.RunError, match=f"on host {host}-elsewhere.*remove"):
        store.Lock(tmp_path).__enter__()


def test_chunk_format_and_load(run_dir):
    """Two chunks of a 6-cell grid (2 × 3), 4 cells in all, one padding row: on disk the
    index keeps the -1, read back it is gone; each chunk has its index entry with the
    checksum of its arrays and its files; the unsolved cells load as missing."""
    import orbax.checkpoint as ocp

    out, _ = run_dir
    chunks = store.Chunks(out)
    chunks.save(0, _fake_result(3), np.array([0, 4, -1]))
    chunks.save(1, _fake_result(2), np.array([5, 1]))
    assert chunks.steps() == [0, 1]
    entries, foreign, bad = chunks.entries()
    assert sorted(entries) == [0, 1] and foreign == [] and bad == {}
    e0 = json.loads((out / "index" / "0.json").read_text())
    assert e0 == entries[0] and e0["cells"] == [0, 4] and e0["rows"] == 3
    assert set(e0) == {"step", "cells", "rows", "arrays_sha256", "files", "stat", "tally"}
    on_disk = {p.relative_to(out / "chunks" / "0").as_posix()
               for p in (out / "chunks" / "0").rglob("*")}
    assert set(e0["files"]) == {p for p in on_disk if (out / "chunks" / "0" / p).is_file()}
    # the record: one digest of [size, mtime, ctime, inode] of the chunk's directory, its
    # directories (each holds a file) and its files, in that order
    dirs = sorted({"."} | {p for p in on_disk if (out / "chunks" / "0" / p).is_dir()})
    rows = [(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for st in
            (os.stat(out / "chunks" / "0" / p) for p in dirs + list(e0["files"]))]
    assert e0["stat"] == {"sha256": hashlib.sha256(np.array(rows, np.int64).tobytes()).hexdigest(),
                          "newest": max(max(r[1], r[2]) for r in rows)}
    # the tally of its 2 cells (padding row left out): objectives 0 and 1, statuses 0 and 1
    t = e0["tally"]
    assert t["cells"] == 2 and t["objective"] == [0.0, 1.0]
    assert t["status"] == {STATUS_NAMES[0]: 1, STATUS_NAMES[1]: 1}
    raw0 = chunks.restore_raw(0)
    assert e0["arrays_sha256"] == files.checksum(raw0)
    c0 = chunks.verify(0, e0, 6)
    assert set(c0) == {"index", "objective", "gap", "grad_norm", "steps", "status", "Z", "b",
                       "class_means", "W", "metrics.nc1", "metrics.collapsed", "theory.spread"}
    np.testing.assert_array_equal(c0["index"], [0, 4])
    np.testing.assert_array_equal(c0["objective"], [0.0, 1.0])
    assert c0["index"].dtype == np.int64 and c0["Z"].shape == (2, 4, 4)
    chunks.close()
    raw = ocp.StandardCheckpointer().restore((out / "chunks" / "0" / "default").absolute())
    np.testing.assert_array_equal(raw["index"], [0, 4, -1])
    assert set(raw["metrics"]) == {"nc1", "collapsed"} and "H" not in raw

    g = reading.load(out)
    assert g.shape == (2, 3) and list(g.axes) == ["n_B", "seed"]
    np.testing.assert_array_equal(g.done.ravel(), [True, True, False, False, True, True])
    np.testing.assert_array_equal(g["objective"].ravel(), [0, 1, np.nan, np.nan, 1, 0])
    np.testing.assert_array_equal(g["steps"].ravel(), [0, 1, -1, -1, 1, 0])
    np.testing.assert_array_equal(g["metrics.collapsed"].ravel(), [1, 0, np.nan, np.nan, 0, 1])
    assert g["Z"].shape == (2, 3, 4, 4) and np.isnan(g["Z"][0, 2]).all()
    assert g.status.ravel().tolist() == [STATUS_NAMES[0], STATUS_NAMES[1], "missing",
                                         "missing", STATUS_NAMES[1], STATUS_NAMES[0]]


def test_checksum_is_canonical():
    """The same arrays in another key order give the same checksum; another dtype, shape
    or byte gives another."""
    a = {"x": np.arange(4.0), "y": np.ones((2, 2), np.int32)}
    c = files.checksum(a)
    assert files.checksum({"y": a["y"], "x": a["x"]}) == c
    assert files.checksum({"x": np.arange(4.0).astype(np.float32), "y": a["y"]}) != c
    assert files.checksum({"x": np.arange(4.0).reshape(2, 2), "y": a["y"]}) != c
    b = np.arange(4.0)
    b[3] = np.nextafter(3.0, 4.0)
    assert files.checksum({"x": b, "y": a["y"]}) != c


def test_a_damaged_chunk_is_reported_and_set_aside(run_dir):
    out, _ = run_dir
    chunks = store.Chunks(out)
    chunks.save(0, _fake_result(2), np.array([0, 1]))
    chunks.save(1, _fake_result(2), np.array([2, 3]))
    for f in (out / "chunks" / "1").rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"garbage")
    said = []
    done, next_step = chunks.survey(6, said.append)
    assert done.tolist() == [True, True, False, False, False, False] and next_step == 2
    assert len(said) == 1 and said[0].startswith("chunk 1 is damaged (its file ")
    assert not (out / "chunks" / "1").exists() and not (out / "index" / "1.json").exists()
    assert (out / "damaged" / "1" / "commit_success.txt").exists()  # set aside, not deleted
    assert json.loads((out / "damaged" / "1.json").read_text())["cells"] == [2, 3]
    assert chunks.steps() == [0]
    chunks.close()


def test_an_interrupted_write_is_finished_or_dropped(run_dir):
    """A chunk committed by orbax whose entry is still pending is verified and indexed;
    a pending entry whose chunk never committed is dropped with orbax's temporary folder."""
    out, _ = run_dir
    chunks = store.Chunks(out)
    chunks.save(0, _fake_result(2), np.array([0, 1]))
    # as if killed before chunk 0 was indexed, and while chunk 1 was written
    chunks.write_entry(0, chunks.entry(0, chunks.restore_raw(0), pending=True))
    chunks.write_entry(1, chunks.entry(1, {"index": np.array([2, 3])}, pending=True))
    (out / "chunks" / "1.orbax-checkpoint-tmp-123").mkdir()
    said = []
    done, next_step = chunks.survey(6, said.append)
    assert said == [] and done.tolist() == [True, True, False, False, False, False]
    assert next_step == 2 and sorted(p.name for p in (out / "chunks").iterdir()) == ["0"]
    assert sorted(p.name for p in (out / "index").iterdir()) == ["0.json"]
    assert "files" in json.loads((out / "index" / "0.json").read_text())
    chunks.close()
