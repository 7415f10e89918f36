"""A loss and its parameters through the spec, the sweep, the store and the CLI: parameters
as [problem] keys and as axes (solved per cell, against cvxpy's optimum of that cell's
loss), and every bad parameter one line naming it, from a spec and from the CLI."""

import json

import numpy as np
import pytest

import ncjax
from ncjax import reference, solvable, spec
from ncjax.cli import main
from tests.conftest import TWO_CLUSTER, run_spec

VS = TWO_CLUSTER + """
n_B = 20
lam_b = 0.01
loss = "vs"
gamma = 0.5
[axes]
tau = [0.0, 1.0]
lam = [0.004, 0.02]
[solver]
method = "convex"
dtype = "float64"
"""


def test_a_loss_parameter_axis_is_solved_per_cell(tmp_path_factory):
    """vs(γ = 0.5, τ) over τ (an axis) and λ, with a penalised bias (so that τ matters):
    every cell at cvxpy's optimum of its own loss, certified; the axis is a coordinate
    of the loaded grid and of the spec the run keeps."""
    run = run_spec(tmp_path_factory, VS, "vs")
    g = ncjax.load(run)
    assert list(g.axes) == ["tau", "lam"] and (g.status == "converged").all()
    n = np.array([100.0, 100.0, 20.0, 20.0])
    for i, tau in enumerate(g.axes["tau"]):
        for j, lam in enumerate(g.axes["lam"]):
            P, _, _ = reference.solve_convex(n, lam, 0.01, loss="vs",
                                             params={"gamma": 0.5, "tau": tau})
            assert g["objective"][i, j] == pytest.approx(P, rel=1e-7)
            assert 0 <= g["gap"][i, j] <= 1e-6 * g["objective"][i, j]
    assert g["objective"][0, 0] != pytest.approx(g["objective"][1, 0], rel=1e-6)
    assert (run / "spec.toml").read_text() == VS
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["loss"] == {"name": "vs", "params": {"gamma": 0.5}, "axes": ["tau"]}
    assert (g["theory.derived"] == 0).all()  # no threshold is derived for VS, γ ≠ 0


@pytest.mark.parametrize("edit, key, needle", [
    ("gamma = 0.5\nalpha = 0.1", "[problem].alpha", "a parameter of loss 'vs'"),
    ("", "[problem].loss", "needs the parameter(s) ['gamma']"),
    ("gamma = inf", "[problem].gamma", "finite"),
    ("gamma = 0.5\nweights = [1, 2]", "[problem].weights", "a parameter of loss 'vs'"),
])
def test_bad_loss_parameters_in_a_spec(tmp_path, capsys, edit, key, needle):
    text = VS.replace("gamma = 0.5", edit)
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(spec.SpecError, match=key.replace("[", r"\[").replace("]", r"\]")):
        solvable.check(spec.loads(text, "s.toml"))
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and needle in err[0], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text, key", [
    (TWO_CLUSTER + 'n_B = 20\nlam = 0.01\nloss = "label_smoothing"\n[axes]\n'
     "alpha = [0.0, 1.0]\n", "[axes].alpha"),
    (TWO_CLUSTER + 'n_B = 20\nlam = 0.01\nloss = "weighted_ce"\nweights = [1, 1, 2]\n',
     "[problem].weights"),
    (TWO_CLUSTER + 'n_B = 20\nlam = 0.01\nloss = "weighted_ce"\nweights = [1, 1, 2, 0]\n',
     "[problem].weights"),
    (TWO_CLUSTER + 'n_B = 20\nlam = 0.01\nloss = "mse"\ntau = 1.0\n', "[problem].tau"),
])
def test_bad_values_name_their_key(text, key):
    with pytest.raises(spec.SpecError, match=key.replace("[", r"\[").replace("]", r"\]")):
        solvable.check(spec.loads(text, "s.toml"))


def test_weight_B_is_the_two_clusters_weights(tmp_path_factory):
    """weight_B on an axis: each cell solved with weights (1, 1, w_B, w_B), as cvxpy's
    weighted program of those weights gives."""
    text = (TWO_CLUSTER + 'n_B = 20\nlam = 0.004\nlam_b = 0.0\nloss = "weighted_ce"\n'
            '[axes]\nweight_B = [1.0, 5.0]\n[solver]\nmethod = "convex"\ndtype = "float64"\n')
    g = ncjax.load(run_spec(tmp_path_factory, text, "wB"))
    for i, w in enumerate(g.axes["weight_B"]):
        P, _, _ = reference.solve_convex([100, 100, 20, 20], 0.004, 0.0, loss="weighted_ce",
                                         params={"weights": [1, 1, w, w]})
        assert g["objective"][i] == pytest.approx(P, rel=1e-7)
    with pytest.raises(spec.SpecError, match=r"\[axes\].weight_B"):
        solvable.check(spec.loads(text.replace("weighted_ce", "vs"), "s.toml"))
    with pytest.raises(spec.SpecError, match=r"\[axes\].weight_B: expected weights > 0"):
        solvable.check(spec.loads(text.replace("[1.0, 5.0]", "[1.0, -5.0]"), "s.toml"))


def test_cli_loss_and_its_parameters(capsys):
    """--loss NAME --loss-param KEY=VALUE: the JSON names the loss and its parameters, and
    the objective is cvxpy's for that loss."""
    args = ["solve", "--counts", "2x100,2x20", "--lam-W", "0.01", "--lam-H", "0.0016",
            "--lam-b", "0.01", "--x64", "--json"]
    assert main(args + ["--loss", "weighted_ce", "--loss-param", "weights=1,1,3,3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["loss"] == "weighted_ce"
    assert out["config"]["loss_params"]["weights"] == [1.0, 1.0, 3.0, 3.0]
    P, _, _ = reference.solve_convex([100, 100, 20, 20], 0.004, 0.01, loss="weighted_ce",
                                     params={"weights": [1, 1, 3, 3]})
    assert out["objective"] == pytest.approx(P, rel=1e-6) and out["converged"]


@pytest.mark.parametrize("extra, needle", [
    (["--loss", "label_smoothing", "--loss-param", "alpha=1.5"], "alpha must be in [0, 1)"),
    (["--loss", "vs", "--loss-param", "gamma=1"], "needs the parameter(s) ['tau']"),
    (["--loss", "vs", "--loss-param", "gamma"], "--loss-param: expected KEY=VALUE"),
    (["--loss", "ce", "--loss-param", "tau=1"], "takes the parameters none"),
    (["--loss", "weighted_ce", "--loss-param", "weights=1,2"], "weights must have one value"),
    (["--loss", "logit_adjusted", "--loss-param", "tau=nan"], "tau must be finite"),
])
def test_cli_bad_loss_parameters_are_one_line(capsys, extra, needle):
    args = ["solve", "--counts", "2x100,2x20", "--lam-W", "0.01", "--lam-H", "0.0016"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ncjax: error: ") and needle in err[0], err
