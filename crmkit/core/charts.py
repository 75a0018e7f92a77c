"""Drawing reports with matplotlib, headless (the ``Agg`` backend), in one house style.

``crmkit report NAME --chart FILE.png|FILE.svg`` and :meth:`crmkit.Report.draw`
call a report's ``chart(result, path)``; these helpers keep every chart
readable: a title that says what and when, labelled axes, numbers on the
bars, no clutter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmkit.core.errors import DeploymentError

#: the palette: one colour per series, readable in print and for the colour-blind
COLORS = ("#3b6fb6", "#e08a2b", "#4e9a5a", "#c44e52", "#8172b3", "#937860", "#8c8c8c")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless backend; a clear error when it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise DeploymentError(
            "drawing charts needs matplotlib: pip install 'crmkit[charts]'", field="chart"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "font.size": 10,
            "axes.titlesize": 13,
            "axes.titleweight": "bold",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "svg.hashsalt": "crmkit",  # the same chart gives the same SVG
        }
    )
    return plt


def figure(width: float = 9.0, height: float = 5.5) -> tuple[Any, Any]:
    """A new figure and its axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


def save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` in the format its suffix names, and free it."""
    plt = pyplot()
    fmt = path.suffix.lower().lstrip(".")  # Report.draw keeps the suffix on its temporary file
    metadata = {"Date": None} if fmt == "svg" else {}
    try:
        fig.savefig(path, format=fmt, metadata=metadata)
    finally:
        plt.close(fig)


def short(amount: float) -> str:
    """An amount in few characters: 1.2M, 35.0k, 900."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(amount) >= size:
            return f"{amount / size:.1f}{unit}"
    return f"{amount:.0f}"


def money_axis(ax: Any, axis: str = "y") -> None:
    """Show amounts on an axis as 1.2M, 35.0k (no 1e7 offset)."""
    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda value, _: short(value)))


def label_bars(ax: Any, bars: Any, texts: list[str]) -> None:
    """Write ``texts`` at the end of horizontal or vertical ``bars``."""
    ax.bar_label(bars, labels=texts, padding=3, fontsize=9)
