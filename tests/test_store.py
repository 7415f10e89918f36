"""The run directory without a solve: its files and their checks, the lock, the chunk
format (index -1 for padding rows, dropped on reading; nested metrics flattened), and load
of a partly written grid (missing cells NaN / -1 / "missing")."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ncjax import spec, store
from ncjax.stopping import STATUS_NAMES

SPEC = """
[problem]
profile = "two_cluster"
K_A = 2
K_B = 2
n_A = 100
lam_W = 0.01
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
    store.create_run(out, sp, 4, tmp_path / "spec.toml")
    return out, sp


def test_create_and_open_run(run_dir, tmp_path):
    out, sp = run_dir
    assert (out / "spec.toml").read_text() == SPEC
    meta = json.loads((out / "run.json").read_text())
    assert set(meta) == {"spec_sha256", "chunk_size", "source"}
    assert meta["chunk_size"] == 4 and meta["source"] == str(tmp_path / "spec.toml")
    meta2, sp2 = store.open_run(out)
    assert meta2 == meta and sp2.text == SPEC and sp2.path == str(out / "spec.toml")
    with pytest.raises(store.RunError, match="already holds a run"):
        store.create_run(out, sp, 4, "x")
    (out / "spec.toml").write_text(SPEC + "# edited\n")
    with pytest.raises(store.RunError, match="was changed after the run started"):
        store.open_run(out)
    with pytest.raises(store.RunError, match="not a run directory"):
        store.open_run(tmp_path)


def test_lock(tmp_path):
    with store.Lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
        with pytest.raises(store.RunError, match=f"another process \\(pid {os.getpid()}\\)"):
            store.Lock(tmp_path).__enter__()
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(str(dead.pid))  # its writer is gone: taken over
    with store.Lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_chunk_format_and_load(run_dir):
    """Two chunks of a 6-cell grid (2 × 3), 4 cells in all, one padding row: on disk the
    index keeps the -1, read back it is gone; the unsolved cells load as missing."""
    import orbax.checkpoint as ocp

    out, _ = run_dir
    chunks = store.Chunks(out)
    chunks.save(0, _fake_result(3), np.array([0, 4, -1]))
    chunks.save(1, _fake_result(2), np.array([5, 1]))
    assert chunks.steps() == [0, 1]
    c0 = chunks.restore(0)
    assert set(c0) == {"index", "objective", "gap", "grad_norm", "steps", "status", "Z", "b",
                       "class_means", "W", "metrics.nc1", "metrics.collapsed", "theory.spread"}
    np.testing.assert_array_equal(c0["index"], [0, 4])
    np.testing.assert_array_equal(c0["objective"], [0.0, 1.0])
    assert c0["index"].dtype == np.int64 and c0["Z"].shape == (2, 4, 4)
    chunks.close()
    raw = ocp.StandardCheckpointer().restore((out / "chunks" / "0" / "default").absolute())
    np.testing.assert_array_equal(raw["index"], [0, 4, -1])
    assert set(raw["metrics"]) == {"nc1", "collapsed"} and "H" not in raw

    g = store.load(out)
    assert g.shape == (2, 3) and list(g.axes) == ["n_B", "seed"]
    np.testing.assert_array_equal(g.done.ravel(), [True, True, False, False, True, True])
    np.testing.assert_array_equal(g["objective"].ravel(), [0, 1, np.nan, np.nan, 1, 0])
    np.testing.assert_array_equal(g["steps"].ravel(), [0, 1, -1, -1, 1, 0])
    np.testing.assert_array_equal(g["metrics.collapsed"].ravel(), [1, 0, np.nan, np.nan, 0, 1])
    assert g["Z"].shape == (2, 3, 4, 4) and np.isnan(g["Z"][0, 2]).all()
    assert g.status.ravel().tolist() == [STATUS_NAMES[0], STATUS_NAMES[1], "missing",
                                         "missing", STATUS_NAMES[1], STATUS_NAMES[0]]


def test_a_damaged_chunk_is_reported_and_removed(run_dir):
    out, _ = run_dir
    chunks = store.Chunks(out)
    chunks.save(0, _fake_result(2), np.array([0, 1]))
    chunks.save(1, _fake_result(2), np.array([2, 3]))
    for f in (out / "chunks" / "1").rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"garbage")
    said = []
    good = chunks.read(said.append, primary=True)
    assert list(good) == [0] and len(said) == 1 and said[0].startswith("chunk 1 is damaged")
    assert not (out / "chunks" / "1").exists()
    chunks.reload()
    assert chunks.steps() == [0]
    chunks.close()
