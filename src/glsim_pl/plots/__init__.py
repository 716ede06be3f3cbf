"""Paper-style figures with matplotlib: pure functions from numbers to a ``Figure``, plus saving and rasterising.

Figures are built on matplotlib's object API with an Agg canvas (never ``pyplot``), so nothing depends on a
display, a global backend or pyplot's figure registry, and rendering works the same in DDP workers and on clusters.

- :mod:`.classes`: confusion matrix, most-confused class pairs, per-class accuracy.
- :mod:`.cost`: accuracy vs cost of selectors / GLSim vs ViT, the bench cost chart, reproduction vs paper.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glsim_pl.errors import UserError

__all__ = ["FORMATS", "check_formats", "ellipsize", "figure_to_array", "new_figure", "save_figure", "tick_indices"]

FORMATS = ("png", "pdf", "svg")
DPI = 150
FONT = 9  # points; 9-10 pt reads well at a single-column paper width


def check_formats(formats: Iterable[str] | str) -> list[str]:
    """``[png, pdf]`` (or ``"png,pdf"``) -> validated, de-duplicated lower-case list; unknown ones are a UserError."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = list(dict.fromkeys(str(f).strip().lower().lstrip(".") for f in items if str(f).strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise UserError(f"figure formats {items!r}: expected one or more of {', '.join(FORMATS)}")
    return out


def new_figure(width_in: float, height_in: float, ncols: int = 1) -> tuple[Figure, list]:
    """A figure with an Agg canvas, constrained layout (labels never clipped) and ``ncols`` axes."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.tick_params(labelsize=FONT - 1)
    return fig, list(axes)


def save_figure(fig: Figure, stem: Path, formats: Iterable[str] = ("png",)) -> list[Path]:
    """Write ``<stem>.<fmt>`` for each format (the figure's own size and dpi, so PNGs are exactly that many pixels)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in check_formats(formats):
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=fig.dpi)
        paths.append(path)
    return paths


def figure_to_array(fig: Figure) -> np.ndarray:
    """Rasterise to (H, W, 3) uint8 RGB, for the trackers' image APIs."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def tick_indices(n: int, max_labels: int) -> list[int]:
    """At most ``max_labels`` evenly spaced indices of ``range(n)`` (all of them when ``n <= max_labels``)."""
    if n <= 0 or max_labels <= 0:
        return []
    step = -(-n // max_labels)
    return list(range(0, n, step))


def ellipsize(name: str, width: int = 22) -> str:
    """Shorten a long class name in the middle (``Black_footed…Albatross``) so both ends stay recognisable."""
    name = str(name)
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]
