"""A run written for other tools (``ncjax export``): netCDF with every stored field
(``SweepGrid.to_xarray``: the axes, class and feature dimensions, the problem, loss, spec
and versions as attributes), or CSV with one row a cell (its axis values, its status and
every field that is one number a cell). Both need xarray (``pip install 'ncjax[xarray]'``;
netCDF through scipy's writer unless netCDF4 or h5netcdf is installed). The file is written
whole or not at all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ncjax.reading import SweepGrid
from ncjax.validate import InputError, as_out_path, replacing

__all__ = ["FORMATS", "check", "write"]

FORMATS = {"netcdf": ".nc", "csv": ".csv"}


def check(path, to: str) -> Path:
    """``path`` if a run can be written there as ``to``; else an InputError (before any
    work): an unknown format, a path that cannot be written, no xarray."""
    if to not in FORMATS:
        raise InputError(f"--to: expected one of {', '.join(FORMATS)}, got {to!r}")
    if importlib.util.find_spec("xarray") is None:
        raise InputError("export needs xarray: pip install 'ncjax[xarray]'")
    return as_out_path(path, name="--out")


def write(g: SweepGrid, path, to: str) -> Path:
    """Write the loaded run ``g`` to ``path`` in the format ``to`` (``FORMATS``)."""
    check(path, to)
    ds = g.to_xarray()
    with replacing(path) as tmp:
        if to == "csv":
            one = [k for k, v in ds.data_vars.items() if v.dims == tuple(g.axes)]
            ds[one].to_dataframe().to_csv(tmp)
        else:
            ds.to_netcdf(tmp)
    return path
