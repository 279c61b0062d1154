"""Figures beside the numbers of docs/benchmarks.md: PNG files in docs/img/, linked from the sections.

Figures are built on matplotlib's Agg backend (no display), without pyplot's global state, and saved without
the metadata that would change from run to run or machine to machine (matplotlib's version): the same figure
gives the same bytes, so a rerun only changes a file whose content changed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench._harness import REPO_ROOT

matplotlib.use("Agg")  # never a display (figures are built without pyplot, saved by the Agg canvas)
IMG_DIR = REPO_ROOT / "docs" / "img"
DPI = 100


def figure(width: float = 9.0, height: float = 3.6, columns: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of `width` x `height` inches with `columns` axes side by side."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, list(fig.subplots(1, columns, squeeze=False)[0])


def save_png(fig: Figure, name: str) -> Path:
    """docs/img/<name>.png (IMG_DIR), reproducible: no Software tag, no dates."""
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    path = IMG_DIR / f"{name}.png"
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def link(path: Path, alt: str) -> str:
    """The Markdown image of `path` as docs/benchmarks.md (in docs/) links it."""
    return f"![{alt}](img/{path.name})"
