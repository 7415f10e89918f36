"""The README's examples, run as a new user runs them (a fresh process each), their output
compared with the output the README prints, so the README cannot go stale.

What is compared (``_same``): the text between numbers exactly, whitespace aside; each
number within the tolerance its kind allows on another machine or JAX version: a
quantity below 1e-6 in the README (a collapsed spread, NC1 at the rounding floor) only as
below 1e-6; an integer count of steps to 15%; a gradient norm or a certified gap (a bound
at the rounding floor of the solve) to a factor of 10; every other number to 1e-6
relative, or the README's printed digits. Lines with a rate or a duration (…/s, ETA) are
left out. The examples run with XLA's default flags, as a user's do (the suite's own
flag, tests/conftest.py, changes the rounding of a few operations).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
TIMED = re.compile(r"/s\b|ETA|elapsed")
FLOOR = re.compile(r"grad|gap|F - F\*")  # numbers at a solve's rounding floor


def _blocks(after: str) -> list[str]:
    """The fenced blocks of the README, in order, from the first one after ``after``."""
    start = README.index(after)
    return re.findall(r"^```[a-z]*\n(.*?)^```$", README[start:], re.S | re.M)


def _close(want: str, got: str) -> bool:
    w, g = float(want), float(got)
    if abs(w) < 1e-6:
        return abs(g) < 1e-6
    if re.fullmatch(r"[-+]?\d+", want) and abs(w) >= 20:
        return abs(g - w) <= 0.15 * abs(w)
    digits = len(re.sub(r"[^0-9]", "", want.split("e")[0].split("E")[0]).lstrip("0")) or 1
    return abs(g - w) <= max(1e-6 * abs(w), 0.51 * 10 ** (_exponent(want) - digits + 1))


def _exponent(text: str) -> int:
    mant, _, exp = text.lower().partition("e")
    m = abs(float(mant))
    lead = 0 if m == 0 else int(f"{m:e}".split("e")[1])
    return lead + (int(exp) if exp else 0)


def _same(want: str, got: str) -> None:
    wl = [ln for ln in want.strip().splitlines() if not TIMED.search(ln)]
    gl = [ln for ln in got.strip().splitlines() if not TIMED.search(ln)]
    assert len(wl) == len(gl), f"README:\n{want}\nran:\n{got}"
    for a, b in zip(wl, gl):
        assert NUMBER.sub("#", a).split() == NUMBER.sub("#", b).split(), (a, b)
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
            ok = (0.1 <= float(y) / float(x) <= 10 if FLOOR.search(a) and float(x)
                  else _close(x, y))
            assert ok, (x, y, a, b)


def _run(argv, **kw):
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_backend_optimization_level")]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, **kw)
    assert out.returncode == 0, out.stderr
    return out


def test_the_python_example():
    code, output = _blocks("### Python")[:2]
    _same(output, _run([sys.executable, "-c", code], cwd=ROOT).stdout)


def test_the_command_line_solve():
    block = _blocks("### Command line")[0]
    command, _, output = block.partition("\n")
    argv = command.removeprefix("$ ").split()
    assert argv[0] == "ncjax"
    _same(output, _run([sys.executable, "-m", "ncjax", *argv[1:]], cwd=ROOT).stdout)


def test_the_sweep_and_its_plot(tmp_path):
    """`ncjax sweep sweeps/quick.toml --out runs/quick && ncjax plot runs/quick`, in a
    scratch directory: the counts it prints (stderr's notes and stdout's summary)."""
    block = _blocks("### Sweeps")[0]
    command, _, output = block.partition("\n")
    assert command == "$ ncjax sweep sweeps/quick.toml --out runs/quick && ncjax plot runs/quick"
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "quick.toml").write_text((ROOT / "sweeps" / "quick.toml").read_text())
    got = []
    for argv in (["sweep", "sweeps/quick.toml", "--out", "runs/quick"], ["plot", "runs/quick"]):
        out = _run([sys.executable, "-m", "ncjax", *argv], cwd=tmp_path)
        got += [out.stderr, out.stdout]
    _same(output, "\n".join(g.strip() for g in got if g.strip()))
    assert (tmp_path / "runs" / "quick" / "phase.png").stat().st_size > 10_000


@pytest.mark.parametrize("want, got, ok", [
    ("1.51609915", "1.51609916", True), ("1.51609915", "1.51612", False),
    ("6.0753516e-01", "6.0753517e-01", True), ("1.3263723e-08", "4e-9", True),
    ("1.3263723e-08", "2e-6", False), ("198", "205", True), ("198", "240", False),
    ("0.00769231", "0.00769231", True), ("576", "576", True), ("2.62e-07", "9.9e-7", True),
])
def test_the_comparison_itself(want, got, ok):
    assert _close(want, got) is ok
