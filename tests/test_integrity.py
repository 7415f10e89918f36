"""A run directory that never lies (issue 19): foreign data refused and user files kept,
every bit flip in a chunk detected, damaged cells solved again to the uninterrupted grid,
runs of the previous layout read and resumed, and every bad input or damaged file one
``ncjax: error:`` line with exit 2 before anything is written.

One solved run (method "convex", float64: the quickest to compile) is shared by the
module; each test works on its own copy."""

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

# A chunk orbax cannot restore leaves tensorstore callbacks that later fire on a closed
# event loop (orbax's, not ncjax's; the command line shows none of it).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

from ncjax import files, reading, spec, store, sweep
from ncjax.cli import main
from ncjax.validate import NCJaxWarning
from tests.conftest import TWO_CLUSTER

SPEC = TWO_CLUSTER + """
[axes]
n_B = [10, 40]
lam = {log = [0.01, 0.05, 3]}
seed = [0, 1]
[solver]
dtype = "float64"
method = "convex"
[run]
chunk_size = 4
"""
FIELDS = ("objective", "gap", "Z", "b", "W", "class_means", "metrics.minority_spread_Z")


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    """(spec file, the run directory of its uninterrupted sweep: 12 cells, 3 chunks)."""
    d = tmp_path_factory.mktemp("solved")
    (d / "spec.toml").write_text(SPEC)
    sweep.run(d / "spec.toml", d / "run", quiet=True)
    return d / "spec.toml", d / "run"


@pytest.fixture
def run(solved, tmp_path):
    """A copy of the solved run."""
    return Path(shutil.copytree(solved[1], tmp_path / "run"))


def _tree(root: Path) -> dict:
    """{relative path: sha256} of every file under ``root`` (and the directories)."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest()
                                             if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def _same(a, b):
    assert a.shape == b.shape and a.done.all() and b.done.all()
    for f in FIELDS:
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)
    np.testing.assert_array_equal(a.status, b.status)


def _one_error(capsys, *needles) -> str:
    """The one line a refused command printed (stdout empty), checked for ``needles``."""
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ncjax: error: "), cap.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _flip(path: Path, rng) -> tuple[int, int]:
    data = bytearray(path.read_bytes())
    at, bit = int(rng.integers(len(data))), int(rng.integers(8))
    data[at] ^= 1 << bit
    path.write_bytes(bytes(data))
    return at, bit


# -- foreign data ---------------------------------------------------------------------

def test_foreign_chunks_are_refused_and_user_files_kept(run, tmp_path, capsys):
    """The issue's reproduction: a run's spec and manifest removed, then a sweep of the
    spec with λ × 10 into it: refused, every file as it was (it used to take the old
    chunks as its own results)."""
    (run / "spec.toml").unlink()
    (run / "manifest.json").unlink()
    other = tmp_path / "lam10.toml"
    other.write_text(SPEC.replace("lam = {log = [0.01, 0.05, 3]}", "lam = {log = [0.1, 0.5, 3]}"))
    before = _tree(run)
    assert main(["sweep", str(other), "--out", str(run)]) == 2
    _one_error(capsys, "not empty and not an ncjax run", "chunks")
    assert _tree(run) == before
    # the previous layout's files removed the same way: refused too
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert main(["sweep", str(other), "--out", str(user)]) == 2
    _one_error(capsys, "not empty and not an ncjax run (it holds notes.txt)")
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_what_is_not_ours_under_chunks_is_reported_and_left(run, solved, capsys):
    (run / "chunks" / "notes.txt").write_text("mine")
    (run / "chunks" / "17").mkdir()  # an integer folder with no index entry
    (run / "chunks" / "17" / "data").write_text("mine too")
    (run / "index" / "readme").write_text("and this")
    g = sweep.resume(run)
    err = capsys.readouterr().err
    for name in ("chunks/notes.txt", "chunks/17", "index/readme"):
        assert f"{run / name} is not" in err and "left as it is" in err, name
    assert (run / "chunks" / "notes.txt").read_text() == "mine"
    assert (run / "chunks" / "17" / "data").read_text() == "mine too"
    assert (run / "index" / "readme").read_text() == "and this"
    assert "already done" in err and "solved" not in err  # nothing solved again
    _same(g, reading.load(solved[1]))


def test_an_index_write_killed_before_its_rename_is_removed(run, solved, capsys):
    """A process killed inside ``write_atomic`` leaves its temporary file in index/: not
    an entry, and removed by the next resume (the kill-then-resume test met one in CI)."""
    tmp = run / "index" / f"{files.TMP_PREFIX}abc123"
    tmp.write_text('{"step": 0, "pen')  # cut mid-write
    g = sweep.resume(run)
    err = capsys.readouterr().err
    assert not tmp.exists() and "not an index entry" not in err
    assert sorted(p.name for p in (run / "index").iterdir()) == ["0.json", "1.json", "2.json"]
    assert "already done" in err and "solved" not in err
    _same(g, reading.load(solved[1]))


# -- integrity ------------------------------------------------------------------------

@pytest.fixture
def recorded(run):
    """The copy of the solved run resumed once: a copy has new inodes, so its chunks were
    verified in full and their files' records taken anew; now every chunk passes the quick
    check."""
    sweep.resume(run, quiet=True)
    entries, _, _ = store.Chunks(run).entries()
    assert len(entries) == 3 and all(store.Chunks(run).unchanged(s, e)
                                     for s, e in entries.items())
    return run


def test_100_random_bit_flips_are_all_detected(recorded):
    """One bit flipped in a random file of a random chunk at a random offset, 100 times:
    each time ``load`` and ``summary`` (``ncjax show``) refuse that chunk by name, with the
    resume command. Every file of a chunk is checksummed (orbax's metadata too), so a flip
    in a byte orbax never reads is detected as well."""
    run = recorded
    rng = np.random.default_rng(19)
    names = sorted(p for p in (run / "chunks").rglob("*") if p.is_file())
    assert len(names) > 20
    for _ in range(100):
        f = names[int(rng.integers(len(names)))]
        original = f.read_bytes()
        _flip(f, rng)
        step = f.relative_to(run / "chunks").parts[0]
        for read in (reading.load, reading.summary):
            with pytest.raises(store.RunError,
                               match=f"chunk {step} is damaged .*`ncjax resume "):
                read(run)
        f.write_bytes(original)
    reading.load(run)  # restored: no complaint


def test_a_no_op_resume_and_show_read_no_chunk(recorded, solved, monkeypatch, capsys):
    """Chunks that pass the quick check are not read by a resume with nothing to do, by
    ``summary`` or by ``load`` until a field is used; ``summary`` gives the numbers the
    fields give; ``verify=True`` reads every chunk."""
    run, reads = recorded, []
    real = store.Chunks.restore_raw

    def counting(self, step):
        reads.append(step)
        return real(self, step)

    monkeypatch.setattr(store.Chunks, "restore_raw", counting)
    sweep.resume(run, quiet=True)
    s = reading.summary(run)
    g = reading.load(run)
    assert reads == [] and g.done.all()
    from ncjax import tally
    assert g.overview() == s and reads == []
    fields = {k: g[k].ravel() for k in tally.FIELDS[1:]}  # the same numbers from the arrays
    assert tally.overview(g.shape, g.axes, tally.of_cells(fields, g.status.ravel())) == s
    assert reads == [0, 1, 2]
    assert s["status"] == {"converged": 12} and s["collapse"]["solved"] == 12
    _same(g, reading.load(solved[1]))
    reads.clear()
    sub = reading.load(run).sel(n_B=10, lam=0.01)  # 2 cells (the seeds): 1 chunk read
    assert sub.shape == (2,) and (sub.status == "converged").all() and len(reads) == 1
    reads.clear()
    sweep.resume(run, quiet=True, verify=True)
    assert sorted(reads) == [0, 1, 2]


def test_a_fresh_sweeps_chunks_pass_the_quick_check(solved):
    """The records a sweep takes as it commits each chunk hold after the sweep (the files'
    times were taken once they were older than a tick, and nothing wrote them since)."""
    c = store.Chunks(solved[1], read_only=True)
    entries = c.entries()[0]
    assert len(entries) == 3 and all(c.unchanged(s, e) for s, e in entries.items())


def test_a_record_within_a_clock_tick_is_not_trusted(recorded):
    """As git's racy index: a record of the files' times that is not older than its index
    entry by more than ``RACY_NS`` proves nothing (a change in the same tick keeps the
    times), so the chunk is verified in full."""
    from ncjax import chunks as chunks_mod

    c = store.Chunks(recorded)
    e = c.entries()[0][1]
    newest = e["stat"]["newest"]
    os.utime(recorded / "index" / "1.json", ns=(newest, newest + chunks_mod.RACY_NS // 2))
    assert not c.unchanged(1, e)
    os.utime(recorded / "index" / "1.json", ns=(newest, newest + 2 * chunks_mod.RACY_NS))
    assert c.unchanged(1, e)


def test_arrays_are_checked_beyond_their_files(run):
    """A change made before the files were hashed (the index entry rewritten to the changed
    files' digests) is still caught: by the checksum of the arrays, or orbax itself."""
    rng = np.random.default_rng(0)
    data = sorted((run / "chunks" / "1" / "default" / "d").iterdir())  # the arrays' bytes
    assert data
    for f in data:
        _flip(f, rng)
    entry = json.loads((run / "index" / "1.json").read_text())
    entry["files"] = files.file_digests(run / "chunks" / "1")
    (run / "index" / "1.json").write_text(json.dumps(entry))
    with pytest.raises(store.RunError,
                       match=r"chunk 1 is damaged \((its arrays differ|orbax cannot restore)"):
        reading.load(run)


def test_damaged_chunks_are_set_aside_and_solved_again(run, solved, capsys):
    """Bit flips in two chunks and one chunk's entry garbled: ``load`` with skip_damaged
    loads the rest (their cells missing, one warning each); resume names each, moves
    them to damaged/ (nothing deleted) and solves their cells again, identical to the
    uninterrupted run."""
    rng = np.random.default_rng(1)
    for step in ("0", "2"):
        files = sorted(p for p in (run / "chunks" / step).rglob("*") if p.is_file())
        _flip(files[int(rng.integers(len(files)))], rng)
    (run / "index" / "1.json").write_text('{"step": 1, "cells": "garbled"}')
    with pytest.warns(NCJaxWarning, match="is damaged") as caught:
        partial = reading.load(run, skip_damaged=True)
    assert len(caught) == 3 and not partial.done.any()
    assert (partial.status == "missing").all()
    g = sweep.resume(run)
    err = capsys.readouterr().err
    for step in (0, 1, 2):
        assert f"chunk {step} is damaged" in err
        assert f"set aside in {run / 'damaged' / str(step)}" in err
        assert (run / "damaged" / str(step)).is_dir()
    _same(g, reading.load(solved[1]))


# -- the previous layout ----------------------------------------------------------------

def _as_legacy(run: Path, spec_file: Path) -> None:
    """The layout of the previous ncjax: spec.toml, run.json, chunks/ (no manifest/index)."""
    meta = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").unlink()
    shutil.rmtree(run / "index")
    (run / "run.json").write_text(json.dumps({"spec_sha256": meta["spec_sha256"],
                                              "chunk_size": 4, "source": str(spec_file)}))


def test_a_run_of_the_previous_layout_loads_and_resumes(run, solved, capsys):
    _as_legacy(run, solved[0])
    with pytest.warns(NCJaxWarning, match="written before checksums"):
        g = reading.load(run)
    ref = reading.load(solved[1])
    _same(g, ref)
    g = sweep.resume(run)
    err = capsys.readouterr().err
    assert "a run written before checksums: its 3 chunks were read without them" in err
    assert "already done" in err and "solved" not in err
    assert json.loads((run / "manifest.json").read_text())["source"] == str(solved[0])
    assert sorted(p.name for p in (run / "index").iterdir()) == ["0.json", "1.json", "2.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(reading.load(run), ref)  # now checksummed: no warning
    _same(g, ref)


def test_a_start_that_stopped_before_its_manifest_is_continued(solved, tmp_path, capsys):
    """A directory holding only spec.toml (stopped between it and the manifest): resume
    continues it; sweep of the same spec would adopt it, of another it is refused with
    the resume command."""
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(solved[0], d / "spec.toml")
    sp = spec.load(solved[0])
    store.check_new(d, sp)  # the same spec: sweep adopts it
    other = spec.loads(SPEC.replace("n_A = 100", "n_A = 200"))
    with pytest.raises(store.RunError, match=f"continue it with `ncjax resume {d}`"):
        store.check_new(d, other)
    g = sweep.resume(d, quiet=True)
    assert json.loads((d / "manifest.json").read_text())["chunk_size"] == 4
    _same(g, reading.load(solved[1]))


# -- bad inputs: one line, exit 2, nothing written --------------------------------------

def _spec_file(tmp_path, text, name="bad.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("old, new, needle", [
    ("lam_W = 0.01", "lam_W = 0.01\nd = 1", "method 'convex' needs d >= K - 1 = 3"),
    ('method = "convex"', 'method = "convex"\nmax_steps = 2147483648', "2**31"),
    ('method = "convex"', 'method = "convex"\nftol = -1.0', "ftol must be >= 0"),
])
def test_solver_settings_are_refused_before_the_directory(tmp_path, capsys, old, new, needle):
    """What the solver refuses (it used to, in the first chunk, after the run directory
    was written: a directory neither resume nor sweep would take) is refused first."""
    p = _spec_file(tmp_path, SPEC.replace(old, new))
    out = tmp_path / "out"
    assert main(["sweep", str(p), "--out", str(out)]) == 2
    _one_error(capsys, needle, str(p))
    assert not out.exists()


def test_bad_out_and_chunk_size_are_refused(solved, tmp_path, capsys):
    spec_file = str(solved[0])
    f = tmp_path / "a_file"
    f.write_text("mine")
    before = _tree(tmp_path)
    assert main(["sweep", spec_file, "--out", str(f)]) == 2
    _one_error(capsys, "exists and is not a directory")
    assert main(["sweep", spec_file, "--out", str(f / "run")]) == 2
    _one_error(capsys, "cannot write the run directory")
    assert main(["sweep", spec_file, "--out", str(tmp_path / "new"), "--chunk-size", "0"]) == 2
    _one_error(capsys, "must be an integer >= 1, got 0")
    with pytest.raises(sweep.RunError, match="got 0"):
        sweep.run(spec_file, tmp_path / "new", chunk_size=0)
    assert _tree(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_is_refused(solved, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["sweep", str(solved[0]), "--out", str(ro)]) == 2
        _one_error(capsys, "cannot write")
        assert main(["sweep", str(solved[0]), "--out", str(ro / "run")]) == 2
        _one_error(capsys, "cannot write")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("name, text, needle", [
    ("manifest.json", '{"chunk_size": 96}', "'spec_sha256' must be a str (no such key)"),
    ("manifest.json", "[1, 2]", "a JSON object is expected"),
    ("manifest.json", "{not json", "cannot be read as JSON"),
    ("run.json", '{"chunk_size": 96}', "'spec_sha256' must be a str (no such key)"),
])
def test_wrong_run_files_are_one_line(run, capsys, name, text, needle):
    if name == "run.json":
        (run / "manifest.json").unlink()
    (run / name).write_text(text)
    before = _tree(run)
    for cmd in ("show", "resume", "report"):
        assert main([cmd, str(run)]) == 2
        _one_error(capsys, f"{run / name}", needle)
    assert _tree(run) == before


def test_a_lock_that_is_a_directory_is_one_line(run, capsys):
    (run / ".lock").mkdir()
    assert main(["resume", str(run)]) == 2
    _one_error(capsys, ".lock: not a lock file")
    assert (run / ".lock").is_dir()


def test_show_plot_report_on_a_damaged_chunk_are_one_line(run, capsys):
    f = next(p for p in (run / "chunks" / "1").rglob("*") if p.name == "manifest.ocdbt")
    f.write_bytes(b"garbage")
    before = _tree(run)
    for cmd in (["show"], ["plot"], ["report"]):
        assert main(cmd + [str(run)]) == 2
        _one_error(capsys, "chunk 1 is damaged", f"`ncjax resume {run}` sets it aside")
    assert _tree(run) == before
