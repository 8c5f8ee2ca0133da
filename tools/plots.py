"""Matplotlib helpers shared by tools.compare and tools.report (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence


def epoch_panels(panels: Sequence[str], draw: Callable, path: Path, dpi: int = 100, height: float = 3.0) -> Path:
    """One axes per panel in a grid of up to 3 columns; ``draw(ax, panel)`` plots it; every axes gets an
    ``epoch`` x label with integer ticks and a light grid; the first one shows the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        draw(ax, panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
