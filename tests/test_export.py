"""A run exported for other tools: every stored field in the Dataset with its dimensions,
a netCDF file that reads back to the same numbers, a CSV of one row a cell."""

import csv
import json

import numpy as np
import pytest

import ncjax
from ncjax.cli import main
from tests.conftest import TWO_CLUSTER, run_spec

xr = pytest.importorskip("xarray")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_spec(tmp_path_factory, TWO_CLUSTER + 'n_B = 20\nloss = "logit_adjusted"\n'
                    "tau = 1.0\n[axes]\nlam = [0.002, 0.004, 0.008]\nseed = [0, 1]\n", "x")


def test_every_field_with_its_dimensions(run):
    g = ncjax.load(run)
    ds = g.to_xarray()
    K = 4  # TWO_CLUSTER: 2 + 2 classes
    assert ds["Z"].dims == ("lam", "seed", "logit", "class") and ds["Z"].shape == (3, 2, K, K)
    assert ds["W"].dims == ("lam", "seed", "class", "feature")
    assert ds["cos_Z"].dims == ("lam", "seed", "class", "class_j")
    assert ds["norm_z"].dims == ("lam", "seed", "class")
    for key, v in g.fields.items():
        table, _, name = key.rpartition(".")
        np.testing.assert_array_equal(ds[f"theory_{name}" if table == "theory" else name], v)
    assert list(ds["status"].values.ravel()) == ["converged"] * 6
    np.testing.assert_array_equal(ds["lam"], [0.002, 0.004, 0.008])
    assert json.loads(ds.attrs["loss"]) == {"name": "logit_adjusted", "params": {"tau": 1.0},
                                            "axes": []}
    assert json.loads(ds.attrs["versions"])["ncjax"] == ncjax.__version__
    assert ds.attrs["spec"] == (run / "spec.toml").read_text()
    # a selection keeps the dimensions and the attributes
    sub = g.sel(seed=1).to_xarray()
    assert sub["Z"].dims == ("lam", "logit", "class") and sub.attrs == ds.attrs


def test_netcdf_and_csv_from_the_command_line(run, capsys):
    g = ncjax.load(run)
    assert main(["export", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'run.nc'}"
    back = xr.open_dataset(run / "run.nc")
    np.testing.assert_array_equal(back["Z"].values, g["Z"])
    np.testing.assert_array_equal(back["objective"].values, g["objective"])
    assert main(["export", str(run), "--to", "csv", "--out", str(run / "c.csv")]) == 0
    rows = list(csv.DictReader((run / "c.csv").open()))
    assert len(rows) == 6 and {"lam", "seed", "status", "objective", "nc1"} <= set(rows[0])
    assert float(rows[5]["objective"]) == pytest.approx(float(g["objective"][2, 1]), rel=1e-6)
    assert main(["export", str(run), "--to", "xls"]) == 2
    assert capsys.readouterr().err.strip() == ("ncjax: error: --to: expected one of "
                                               "netcdf, csv, got 'xls'")
