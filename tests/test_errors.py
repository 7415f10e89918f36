"""Hostile input at the boundary: each bad spec, option or output path ends with one line
``ncjax: error: …`` naming the file, key or value, exit 2, and nothing written; figures
and reports appear atomically. No solve here except one tiny run for plot and report."""

import os

import numpy as np
import pytest
from matplotlib.figure import Figure

from ncjax import draw, report, solver, sweep
from ncjax.cli import main
from ncjax.validate import InputError, as_seeds, replacing
from tests.conftest import run_spec

TINY = """
[problem]
profile = "two_cluster"
K_A = 2
K_B = 2
n_A = 100
lam = 0.01
[axes]
n_B = [10, 20]
[solver]
method = "convex"
dtype = "float64"
"""

BASE = """
[problem]
profile = "balanced"
K = 3
n = 10
lam = 0.01
"""


def one_error(capsys, argv) -> str:
    """Run the CLI; it must return 2 with exactly one stderr line, the error."""
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ncjax: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_spec(tmp_path_factory, TINY, "errors")


@pytest.mark.parametrize("text, words", [
    (BASE.replace("lam = 0.01", "lam = 1e200"), ["[problem].lam", "float64", "1e+200"]),
    (BASE.replace("lam = 0.01", "lam = 1e300"), ["[problem].lam", "float64", "1e+300"]),
    (BASE.replace("lam = 0.01", "c = 1e300"), ["[problem].c", "float64", "1e+300"]),
    (BASE.replace("lam = 0.01", "lam_W = 1e200\nlam_H = 1e200"),
     ["[problem].lam_H", "lam_W * lam_H", "inf"]),
    (BASE.replace("lam = 0.01", "lam_W = 1e-160\nlam_H = 1e160"),
     ["[problem].lam_H", "lam_H / lam_W", "inf"]),
    (BASE.replace("lam = 0.01", "lam = 1e-200"), ["[problem].lam", "lam_H", "float64"]),
    (BASE + 'lam_b = 1e308\nconvention = "paper"\n', ["[problem].lam_b", "float64"]),
    (BASE.replace("lam = 0.01", "lam = 0.01\n[axes]\nlam_W = [1e-3, 1e308]"),
     ["[axes].lam_W", "lam_H", "float64"]),
    (BASE + "[solver]\nmax_steps = 2147483648\n", ["[solver].max_steps", "2**31"]),
    (BASE + "[solver]\nmax_steps = 99999999999999999999\n", ["[solver].max_steps"]),
    (BASE + "[solver]\nftol = -1.0\n", ["[solver].ftol", ">= 0"]),
    (BASE + "[solver]\nmemory_size = -5\n", ["[solver].memory_size", ">= 1"]),
    (BASE + "[solver]\noptimizer = \"sgd\"\n", ["[solver].optimizer", "'sgd'"]),
    (BASE + "[solver]\ndtype = \"int8\"\n", ["[solver].dtype", "'int8'"]),
    (BASE + "d = 1\n[solver]\nmethod = \"convex\"\n", ["[solver].method", "d >= K - 1"]),
    (BASE + "m = 3000000000\n", ["[problem].m", "2**31"]),
    (BASE + "[axes]\nseed = [0, -1]\n", ["[axes].seed", "[0, 2**32)", "-1"]),
    (BASE + "[axes]\nseed = [0, 4294967296]\n", ["[axes].seed", "[0, 2**32)", "4294967296"]),
    (BASE + "[axes]\nseed = {lin = [0, 4294967296, 3]}\n", ["[axes].seed", "[0, 2**32)"]),
    (BASE.replace("K = 3", "K = 1000000"), ["[problem].K", "at most 100000 classes"]),
    (BASE.replace('"balanced"\nK = 3\nn = 10', '"steps"\ngroups = [[10000000000, 1]]'),
     ["[problem].groups", "at most 100000 classes"]),
    (BASE.replace('"balanced"\nK = 3\nn = 10', '"explicit"\ncounts = [1e308, 1e308]'),
     ["[problem]", "total count N"]),
    (BASE + "[axes]\nn = {lin = [1, 2, 100000000000]}\n", ["[axes].n.lin", "num <="]),
    (BASE + "[axes]\nn = {lin = [1, 2, 10000]}\nlam_b = {lin = [0, 1, 10000]}\n",
     ["[axes]", "cells", "100000000"]),
    (BASE + "[axes]\nlam_b = []\n", ["[axes].lam_b", "non-empty"]),
    (BASE + "[axes]\nlam_b = [0.1, nan]\n", ["[axes].lam_b", "finite"]),
    (BASE + "[axes]\nlam_b = [0.1, inf]\n", ["[axes].lam_b", "finite"]),
    (BASE.replace("lam = 0.01", "lam = -0.01"), ["[problem].lam", "> 0"]),
    (BASE.replace("n = 10", "n = -10"), ["class count", "> 0"]),
    (BASE.replace("n = 10", 'n = "ten"'), ["[problem].n", "a number"]),
    (BASE.replace("K = 3", "K = 1e400"), ["[problem].K", "finite"]),
    (BASE + "bias = 1\n", ["[problem].bias", "true or false"]),
    (BASE + "[run]\nchunk_size = 99999999999\n", ["[run].chunk_size", "2**31"]),
])
def test_bad_spec_is_one_line_and_writes_nothing(capsys, tmp_path, text, words):
    (tmp_path / "s.toml").write_text(text)
    line = one_error(capsys, ["sweep", tmp_path / "s.toml", "--out", tmp_path / "out"])
    assert str(tmp_path / "s.toml") in line
    for w in words:
        assert w in line, line
    assert not (tmp_path / "out").exists()


def test_spec_not_utf8(capsys, tmp_path):
    (tmp_path / "s.toml").write_bytes(BASE.encode() + b"# caf\xe9\n")
    line = one_error(capsys, ["sweep", tmp_path / "s.toml", "--out", tmp_path / "out"])
    assert "s.toml: not UTF-8" in line and "byte" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out, words", [
    ("missing/fig.png", ["no directory", "missing"]),
    ("fig.foo", ["fig.foo", ".png", ".pdf"]),
    ("fig", ["expected a file ending"]),
    (".", ["is a directory"]),
])
def test_plot_out_is_checked_first(capsys, run, tmp_path, out, words):
    line = one_error(capsys, ["plot", run, "--out", tmp_path / out])
    for w in words:
        assert w in line, line
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("out, words", [
    ("missing/r.md", ["no directory", "missing"]),
    (".", ["is a directory"]),
])
def test_report_out_is_checked_first(capsys, run, tmp_path, out, words):
    line = one_error(capsys, ["report", run, "--out", tmp_path / out])
    for w in words:
        assert w in line, line
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("extra, words", [
    (["--cell", "99"], ["cell 99", "2 cells"]),
    (["--cell", "-1"], ["cell -1"]),
    (["--cells", ""], ["--cells", "''"]),
    (["--cells", "0,,1"], ["--cells"]),
    (["--cell", "n_B=nan"], ["--cell", "finite"]),
    (["--cell", "n_B=inf"], ["--cell", "finite"]),
    (["--cell", "colour=1"], ["no axis", "colour"]),
    (["--cell", "0", "--trace", "0"], ["--trace", ">= 1"]),
    (["--cell", "0", "--trace", "-5"], ["--trace", ">= 1"]),
    (["--cell", "0", "--trace", str(2**31)], ["--trace", "< 2**31"]),
    (["--cell", "0", "--trace", "3", "--m", "0"], ["--m", ">= 1"]),
])
def test_bad_plot_options(capsys, run, tmp_path, extra, words):
    line = one_error(capsys, ["plot", run, "--out", tmp_path / "f.png"] + extra)
    for w in words:
        assert w in line, line
    assert not (tmp_path / "f.png").exists()


SOLVE = ["solve", "--counts", "1,1", "--lam-W", "1", "--lam-H", "1"]


@pytest.mark.parametrize("extra, words", [
    (["--seed", "-1"], ["seed", "[0, 2**32)", "-1"]),
    (["--seed", str(2**32)], ["seed", "[0, 2**32)", str(2**32)]),
    (["--d", str(2**31)], ["d must be < 2**31"]),
    (["--m", str(10**12)], ["m must be < 2**31"]),
    (["--counts", "1000000000000x1"], ["--counts", "at most 100000 classes"]),
    (["--lam-W", "1e200", "--lam-H", "1e200"], ["lam_W * lam_H", "float64"]),
])
def test_bad_solve_options(capsys, extra, words):
    line = one_error(capsys, SOLVE + extra)
    for w in words:
        assert w in line, line


def test_seeds_are_the_prng_range():
    np.testing.assert_array_equal(as_seeds([0, 2**32 - 1]), [0, 2**32 - 1])
    for bad in (-1, 2**32, 2**64, [0, 2**63], np.array([2**40])):
        with pytest.raises(InputError, match=r"\[0, 2\*\*32\)"):
            as_seeds(bad)
    with pytest.raises(InputError, match=r"key_index must be in \[0, 2\*\*32\)"):
        solver.prepare([10, 10], 0.1, 0.1, key_index=2**32)


def test_replacing_keeps_the_old_file_on_failure(tmp_path):
    f = tmp_path / "r.md"
    f.write_text("good")
    with pytest.raises(KeyboardInterrupt):
        with replacing(f) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert f.read_text() == "good" and os.listdir(tmp_path) == ["r.md"]
    with replacing(f) as tmp:
        tmp.write_text("new")
    assert f.read_text() == "new" and os.listdir(tmp_path) == ["r.md"]


def test_interrupted_figure_leaves_the_old_one(tmp_path, monkeypatch):
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    out = tmp_path / "f.png"
    draw.save(fig, out)
    good = out.read_bytes()
    assert good.startswith(b"\x89PNG")

    def broken(self, fname, **kw):
        open(fname, "wb").close()  # the 0-byte file an interrupted savefig leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        draw.save(fig, out)
    assert out.read_bytes() == good and os.listdir(tmp_path) == ["f.png"]


def test_plot_and_report_write_their_files(capsys, run, tmp_path):
    assert main(["plot", str(run), "--out", str(tmp_path / "f.SVG")]) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "r.md")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["f.SVG", "r.md"]
    assert b"<svg" in (tmp_path / "f.SVG").read_bytes()
    assert (tmp_path / "r.md").read_text().startswith("#")
    with pytest.raises(InputError, match="cannot write|no directory"):
        report.write(sweep.load(run), tmp_path / "nope" / "r.md")
