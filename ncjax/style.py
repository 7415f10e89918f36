"""How every figure looks: its size preset, the theory's and the measurement's line styles,
the colours of what counts as zero, and the file formats a figure is saved in.

A size preset (``SIZES``) is a width in inches and type sizes in points chosen to be read
at that width: ``"column"`` one column of a two-column paper (3.4 in), ``"full"`` a
paper's text width (7 in), ``"slide"`` a 16:9 slide (11 in of its 13.3). The drawing
functions build their figure inside ``sized(size)``, a ``matplotlib.rc_context``: the type
sizes reach every label, tick and legend, and the caller's rcParams are as they were once
the figure is built. No backend is chosen and no pyplot state is touched (``Figure()``
needs neither), and ``Figure``, the figure class every drawing function builds, renders
itself as PNG for IPython (``_repr_png_``): a notebook shows a returned figure inline even
where nothing imported pyplot (whose inline backend would register that display), and
``save`` writes it.

The visual grammar: the theory in colour, as a broad translucent line (``theory``), the
measurement in black, thin, drawn over it with a white edge (``measured``), so that both
show where they coincide. Values at the dtype's rounding floor (``tolerances.rounding``)
or a solution that counts as Z = 0 are drawn in the flat colours ``ZERO_COLOR`` and
``Z0_COLOR``, never on the data's colour scale.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import NamedTuple

import matplotlib
import matplotlib.figure
from matplotlib import patheffects
from matplotlib.backend_bases import FigureCanvasBase

from ncjax.validate import InputError, as_out_path, replacing

# The file formats ``save`` writes (matplotlib's, named by the file's extension).
FORMATS = tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


class Figure(matplotlib.figure.Figure):
    """A matplotlib Figure that IPython shows inline as PNG (``_repr_png_``, as the
    inline backend draws: tight bounding box) without any pyplot state; a display
    formatter registered for figures (pyplot's inline backend) still takes precedence."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


class Size(NamedTuple):
    """A size preset: width (in), font (pt: labels, ticks, legends), title (pt) and line
    (pt: the width of a data line)."""

    width: float
    font: float
    title: float
    line: float


SIZES = {"column": Size(3.4, 7.0, 7.5, 1.0), "full": Size(7.0, 8.5, 9.5, 1.3),
         "slide": Size(11.0, 14.0, 16.0, 2.2)}
DEFAULT_SIZE = "full"

# Flat colours of what is zero: a spread (or a vector) at the dtype's rounding floor, and
# a solution that counts as Z = 0 (``metrics.is_zero``).
ZERO_COLOR = "#d9d9d9"
Z0_COLOR = "#5e5e5e"


def size_of(size) -> Size:
    """The preset named ``size`` (a key of ``SIZES``), or a ``Size`` itself."""
    if isinstance(size, Size):
        return size
    if size not in SIZES:
        raise InputError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    return SIZES[size]


@contextlib.contextmanager
def sized(size):
    """Build a figure at the preset ``size``: yields its ``Size``, with matplotlib's type
    sizes set for the duration (the caller's rcParams are restored after)."""
    s = size_of(size)
    small = round(0.9 * s.font, 1)
    with matplotlib.rc_context({
            "font.size": s.font, "axes.labelsize": s.font, "axes.titlesize": s.title,
            "figure.titlesize": s.title, "xtick.labelsize": small, "ytick.labelsize": small,
            "legend.fontsize": small, "legend.title_fontsize": small,
            "lines.linewidth": s.line, "axes.linewidth": 0.6 * s.line,
            "xtick.major.width": 0.6 * s.line, "ytick.major.width": 0.6 * s.line,
            "xtick.minor.width": 0.45 * s.line, "ytick.minor.width": 0.45 * s.line}):
        yield s


def theory(s: Size, color, ls="-") -> dict:
    """Line properties of a theory's curve: broad, translucent, under the measurement."""
    return {"color": color, "lw": 2.6 * s.line, "ls": ls, "alpha": 0.7, "zorder": 3,
            "solid_capstyle": "butt"}


def measured(s: Size, ls="--") -> dict:
    """Line properties of a measured curve: thin black with a white edge, on top."""
    return {"color": "k", "lw": 0.9 * s.line, "ls": ls, "zorder": 5, "path_effects": [
        patheffects.withStroke(linewidth=2.2 * s.line, foreground="white")]}


def check_out(out):
    """``out`` checked before any work (``validate.as_out_path``: its extension one of
    ``FORMATS``); None passes."""
    return None if out is None else as_out_path(out, formats=FORMATS)


def check(size, out):
    """A figure's arguments checked before any work: the preset ``size`` (``size_of``)
    and the file ``out`` (``check_out``, returned)."""
    size_of(size)
    return check_out(out)


def save(fig, out, dpi: int = 150) -> None:
    """Save ``fig`` to ``out`` (``check_out``), atomically: an interrupted save leaves the
    file as it was."""
    out = check_out(out)
    with replacing(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lower().lstrip("."))


def visible(text: str) -> int:
    """About the number of characters ``text`` shows (mathtext commands count as one)."""
    return len(re.sub(r"[${}_^]", "", re.sub(r"\\[a-zA-Z]+", "x", text)))


def wrap(text: str, s: Size, pt: float | None = None) -> str:
    """``text`` broken at its "; " separators (never inside mathtext) into lines that fit
    the width of the preset ``s`` at ``pt`` points (default its title size)."""
    budget = s.width * 72 / (0.6 * (pt or s.title))
    lines, cur = [], ""
    for part in text.split("; "):
        joined = f"{cur}; {part}" if cur else part
        if cur and visible(joined) > budget:
            lines.append(cur + ";")
            cur = part
        else:
            cur = joined
    return "\n".join(lines + [cur])


def columns(labels, s: Size, most: int = 3) -> int:
    """How many columns of a legend of ``labels`` fit across the width of the preset ``s``
    (at most ``most``)."""
    wide = max((visible(lab) for lab in labels), default=1) + 5  # the key and the gap
    return int(max(1, min(most, s.width * 72 // (0.55 * 0.9 * s.font * wide))))
