"""The command line: --json output checked against the convex optimum; errors exit 2."""

import json
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
