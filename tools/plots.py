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


def open_set_png(metrics: dict, path: Path, dpi: int = 100) -> Path:
    """``whaleid identify --metrics``' file drawn: the reliability diagram (observed frequency of "same whale"
    against predicted probability, raw score and calibrated, the count-weighted ECE in the legend) and the top
    score of known and new whales' photos with the new-whale threshold(s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rel, dist) = plt.subplots(1, 2, figsize=(10, 3.8))
    rel.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="perfectly calibrated")
    scored = metrics.get("whaleid", {})
    for name, bins in metrics.get("reliability", {}).items():
        pts = [(b["predicted"], b["observed"]) for b in bins if b["count"]]
        ece = scored.get(f"ece_{name}")
        rel.plot(*zip(*pts), marker="o", label=f"{name}" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    rel.set(xlabel="predicted P(same whale)", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1),
            title="reliability over the candidates shown")
    rel.legend(fontsize=8)
    tops = metrics.get("top_scores", {})
    values = [v for k in ("known", "new") for v in tops.get(k, [])]
    if values:
        edges = __import__("numpy").linspace(min(values), max(values), 25)
        for kind, colour in (("known", "#2c7a3f"), ("new", "#8250df")):
            dist.hist(tops.get(kind, []), bins=edges, alpha=0.55, color=colour, label=f"{kind} whale ({len(tops.get(kind, []))})")
    for view, t in metrics.get("thresholds", {}).items():
        dist.axvline(t, color="#333", ls="--", lw=1)
        dist.text(t, dist.get_ylim()[1] * 0.95, f" {view} {t:.3f}", fontsize=8, va="top")
    dist.set(xlabel="top candidate's score", ylabel="photos", title="known and new whales' top scores")
    dist.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
