"""The command line: --json output checked against the convex optimum; errors exit 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ncjax.cli import main
from ncjax.commands import parse_counts
from tests.conftest import convex_optimum

ARGS = ["solve", "--counts", "2x500,3x100", "--lam-W", "0.01", "--lam-H", "0.0004",
        "--lam-b", "0.002"]


def test_json_output(capsys):
    assert main(ARGS + ["--json", "--x64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"objective", "status", "converged", "steps", "grad_norm", "Z", "b", "metrics",
            "theory"} <= out.keys()
    assert out["status"] == "converged" and out["converged"] is True
    counts = (500.0, 500.0, 100.0, 100.0, 100.0)
    lam = np.sqrt(0.01 * 0.0004)
    P_star, Z_star, _ = convex_optimum(counts, lam, 0.002)
    np.testing.assert_allclose(out["objective"], P_star, rtol=1e-6)
    Z = np.array(out["Z"])
    assert Z.shape == (5, 5)
    np.testing.assert_allclose(Z, Z_star, atol=1e-3)  # column k is class k
    np.testing.assert_allclose(out["theory"]["lam_star"], 10 / 1300)
    assert out["theory"]["minority_collapse"] is False
    assert out["metrics"]["minority_collapsed"] is False
    assert out["theory"]["group_threshold"][0] == pytest.approx(np.sqrt(500) / 1300)


def test_readable_summary(capsys):
    assert main(ARGS) == 0
    text = capsys.readouterr().out
    assert "status     converged" in text and "lam* = sqrt(n_B)/N = 0.00769231" in text


def test_paper_convention_flag(capsys):
    main(ARGS[:3] + ["--lam-W", "0.005", "--lam-H", "0.0002", "--lam-b", "0.001",
                     "--convention", "paper", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["lam_W"] == pytest.approx(0.01)
    assert out["config"]["lam_b"] == pytest.approx(0.002)


@pytest.mark.parametrize("extra, words", [
    (["--counts", "500,0"], "> 0"),
    (["--counts", "500,nan"], "finite"),
    (["--counts", "500"], "at least 2 classes"),
    (["--counts", "500,abc"], "cannot read"),
    (["--lam-W", "-1"], "lam_W must be >= 0"),
    (["--lam-H", "inf"], "lam_H must be finite"),
    (["--m", "0"], "m must be >= 1"),
])
def test_bad_input_exits_2_with_one_line(capsys, extra, words):
    assert main(ARGS + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncjax: error:") and words in err
    assert "Traceback" not in err


def test_module_entry_point_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "ncjax"] + ARGS + ["--counts", "1,-1"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == "ncjax: error: every class count n_k must be > 0, got [1.0, -1.0]"


def test_small_d_warns_on_the_command_line(capsys):
    assert main(ARGS + ["--d", "2"]) == 0
    assert "ncjax: warning: d = 2 < K - 1 = 4" in capsys.readouterr().err


def test_parse_counts():
    assert parse_counts("2x500,100") == [500.0, 500.0, 100.0]


def test_solve_chooses_method_dtype_and_gap_tol(capsys):
    """--method convex --dtype float64 --gap-tol: the convex optimum, certified to the gap
    asked; --x64 with another --dtype is one error line."""
    assert main(ARGS + ["--json", "--method", "convex", "--dtype", "float64",
                        "--gap-tol", "1e-10"]) == 0
    out = json.loads(capsys.readouterr().out)
    P_star, _, _ = convex_optimum((500.0, 500.0, 100.0, 100.0, 100.0),
                                  np.sqrt(0.01 * 0.0004), 0.002)
    assert out["converged"] is True and out["gap"] <= 1e-10 * abs(out["objective"])
    np.testing.assert_allclose(out["objective"], P_star, rtol=1e-8)
    assert main(ARGS + ["--x64", "--dtype", "float32"]) == 2
    assert capsys.readouterr().err.strip() == "ncjax: error: --x64 and --dtype float32: give one"


def test_version_names_ncjax_and_its_engine():
    import importlib.metadata

    import ncjax
    out = subprocess.run([sys.executable, "-m", "ncjax", "--version"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "COLUMNS": "40"})
    assert out.returncode == 0
    assert out.stdout.startswith(f"ncjax {ncjax.__version__} (jax "
                                 f"{importlib.metadata.version('jax')}, "), out.stdout
    assert out.stdout.count("\n") == 1, out.stdout  # one line, however narrow the terminal


def test_help_is_plain_words():
    """``ncjax --help`` and every command's: no reST markup (double backticks) leaks."""
    from ncjax.cli import build_parser
    p = build_parser()
    texts = [p.format_help()] + [sub.format_help() for a in p._subparsers._group_actions
                                 for sub in a.choices.values()]
    assert len(texts) == 9 and all("``" not in t for t in texts), texts[0]


def test_clock_keeps_hours():
    from ncjax.progress import clock
    assert [clock(s) for s in (0, 59.4, 61, 3960, 90061, float("inf"))] == [
        "0:00", "0:59", "1:01", "1:06:00", "25:01:01", "--:--"]


def test_progress_is_plain_lines_in_a_log_and_a_bar_on_a_terminal(monkeypatch):
    import io

    from ncjax.progress import Progress
    log = io.StringIO()
    bar = Progress(100, log, every=3600)
    for done in range(10, 101, 10):
        bar.update(done, done, final=done == 100)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 2  # the first and the last
    assert lines[-1].startswith("[" + "#" * 30 + "] 100/100 configurations")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    bar = Progress(100, tty, every=3600)
    for done in (50, 100):
        bar.update(done, done)
    bar.close()
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("\n")


def test_quiet_sweep_and_resume_write_nothing_on_stderr(tmp_path, capsys):
    from tests.conftest import TWO_CLUSTER
    (tmp_path / "s.toml").write_text(TWO_CLUSTER + "n_B = 20\nlam = 0.004\n[axes]\n"
                                     "seed = [0, 1]\n")
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "status converged 2" in out.out
    assert main(["resume", str(tmp_path / "r"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "status converged 2" in out.out
    assert main(["resume", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().err == "ncjax: resuming: 2 of 2 configurations already done\n"


def test_set_overrides_a_spec_and_the_run_keeps_it(tmp_path, capsys):
    """--set solver.method=convex --set axes.seed=[0,1]: the run is the one of the spec
    edited by hand (same objectives), its spec.toml says so, and a resume keeps it; a bad
    --set is one error line and nothing written."""
    import ncjax
    from ncjax import spec
    from tests.conftest import TWO_CLUSTER
    base = TWO_CLUSTER + "n_B = 20\nlam = 0.004\n[axes]\nseed = [5]\n"
    (tmp_path / "s.toml").write_text(base)
    (tmp_path / "edited.toml").write_text(base.replace("seed = [5]", "seed = [0, 1]")
                                          + '[solver]\nmethod = "convex"\n')
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "r"), "--quiet",
                 "--set", "solver.method=convex", "--set", "axes.seed=[0, 1]"]) == 0
    assert main(["sweep", str(tmp_path / "edited.toml"), "--out", str(tmp_path / "e"),
                 "--quiet"]) == 0
    capsys.readouterr()
    g, e = ncjax.load(tmp_path / "r"), ncjax.load(tmp_path / "e")
    assert g.spec.solver == {"method": "convex"} and list(g.axes["seed"]) == [0, 1]
    np.testing.assert_array_equal(g["objective"], e["objective"])
    stored = (tmp_path / "r" / "spec.toml").read_text()
    assert stored.startswith(f"# {tmp_path / 's.toml'} with --set solver.method=convex")
    assert spec.loads(stored).problem == spec.loads(base).problem
    assert main(["resume", str(tmp_path / "r"), "--quiet"]) == 0
    for bad, words in ((["--set", "solver.method"], "expected TABLE.KEY=VALUE"),
                       (["--set", "nope.x=1"], "expected TABLE.KEY=VALUE"),
                       (["--set", "solver.method=[1,"], "is not a TOML value"),
                       (["--set", "solver.warp=1"], "[solver].warp")):
        assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "x"),
                     *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
        assert not (tmp_path / "x").exists()
