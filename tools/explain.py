"""Pair explanations: where two photos' embeddings agree.

    python -m tools.explain RUN --query IMAGE_ID --db IMAGE_ID [--out pair.png] [--weights FILE]

For a (query, database) pair, a heatmap on each photo: the gradient of the two embeddings' cosine
similarity with respect to that photo's last feature map, Grad-CAM style (Selvaraju et al., ICCV 2017):
channel weights are the spatially averaged gradients, the map is ReLU(sum_c weight_c * A_c), upsampled
to the photo. Both directions at once: each photo's map says which of its regions raise the similarity to
the other. Drawn side by side over the photos, with the cosine in the title.

A backbone whose output is not a feature map (``mode: pooled``) can supply its own explanation by
defining ``explain_pair(image_a, image_b, neck) -> (heat_a, heat_b)``; without one, the tool says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from core.explain import ExplainError, load_image, pair_heatmaps  # noqa: F401  (the tool's API, used by tools.report)

ROOT = Path(__file__).resolve().parent.parent


def load_run_model(run: Path, weights: Path | None = None):
    """(model with the run's best weights, its config, registries)."""
    from omegaconf import OmegaConf

    from core.model import build_model, load_weights
    from core.plugins import build_registries

    cfg = OmegaConf.load(run / "config.yaml")
    registries = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])
    if "pretrained" in cfg.backbone:
        cfg.backbone.pretrained = False  # the trained weights replace any starting point
    model = build_model(cfg, registries)
    path = weights or next((run / n for n in ("best.safetensors", "last.safetensors") if (run / n).is_file()), None)
    if path is None:
        raise ExplainError(f"{run}: no best.safetensors or last.safetensors")
    load_weights(model, path)
    return model.eval(), cfg, registries


def image_table(cfg) -> dict[str, str]:
    from core.data import read_metadata

    meta = read_metadata(cfg.data.root, require_identity=False)
    return dict(zip(meta["image_id"], meta["file"]))


def draw_pair(photo_a, photo_b, heat_a, heat_b, title: str, path: Path, labels=("query", "database")) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    for ax, photo, heat, label in zip(axes, (photo_a, photo_b), (heat_a, heat_b), labels):
        ax.imshow(photo)
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def explain(run: Path, query: str, db: str, out: Path, weights: Path | None = None, model_cfg=None) -> dict:
    model, cfg, _ = model_cfg or load_run_model(run, weights)
    files = image_table(cfg)
    missing = [i for i in (query, db) if i not in files]
    if missing:
        raise ExplainError(f"image id(s) {missing} not in {cfg.data.root}/metadata.csv")
    (xa, pa), (xb, pb) = load_image(files[query], cfg), load_image(files[db], cfg)
    heat_a, heat_b, cosine = pair_heatmaps(model, xa, xb)
    draw_pair(pa, pb, heat_a, heat_b, f"{query} vs {db}: cosine {cosine:.3f}", out, (query, db))
    return {"query": query, "db": db, "cosine": cosine, "png": str(out)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.explain", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m tools.explain runs/demo --query train0012 --db train0345")
    p.add_argument("run", type=Path, help="a run folder (its config, data.root and best weights)")
    p.add_argument("--query", required=True, help="image id of the query photo")
    p.add_argument("--db", required=True, help="image id of the database photo")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN/explain_<query>_<db>.png)")
    p.add_argument("--weights", type=Path, help="weights file (default: the run's best)")
    args = p.parse_args(argv)
    out = args.out or args.run / f"explain_{args.query}_{args.db}.png"
    try:
        info = explain(args.run, args.query, args.db, out, args.weights)
    except (ExplainError, FileNotFoundError) as exc:
        p.exit(2, f"error: {exc}\n")
    print(f"cosine {info['cosine']:.4f}; written to {info['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
