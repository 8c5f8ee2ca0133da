"""A run report: one self-contained HTML page (every image inlined, no network).

    python -m tools.report RUN [--out RUN/report.html] [--queries 3] [--top-k 6] [--no-explain]

The page holds, in order:
1. the summary: best validation mAP, its lift over a random ranking, warnings;
2. curves: validation mAP per epoch overall and per scenario with the random ranking as a band, and the
   training loss and learning rate (PNG copies beside the page, for READMEs);
3. the best epoch's per-scenario table;
4. retrieval galleries: per scenario the worst queries by AP first, then random ones; each with its top-k
   database images as thumbnails with their scores, framed green (same whale) or red, and the rank of the
   first true match when it is outside the top k. Built from the run's saved validation embeddings
   (``oof.npz``) and its postprocess chain, so nothing is re-embedded;
5. pair explanations (``tools.explain``) for each gallery's first hit and first false hit;
6. the resolved config.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.runs import RunError, history  # noqa: E402

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.warn{background:#fff3cd;padding:6px 10px;border-left:4px solid #e0a800}
.gallery{display:flex;gap:6px;align-items:flex-start;margin:8px 0;flex-wrap:wrap}
.thumb{text-align:center;font-size:11px}
.thumb img{display:block;border:4px solid #999}
.thumb.query img{border-color:#333}.thumb.hit img{border-color:#1a9a3a}.thumb.miss img{border-color:#d0302f}
.note{font-size:12px;color:#555;align-self:center}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}
"""


def png_data(path_or_bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def jpeg_data(path: Path, quality: int = 85) -> str:
    """A photo-like PNG (a pair explanation) inlined as JPEG: a fifth of the bytes."""
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as img:
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail(path: str, size: int = 96, rotate: bool = False) -> str:
    """A JPEG data URI of the photo, longest side ``size``; a grey square when it cannot be read."""
    from PIL import Image

    from core.images import ImageError, load_rgb, portrait

    try:
        img = load_rgb(path)
        img = portrait(img) if rotate else img
        img.thumbnail((size, size))
    except ImageError:
        img = Image.new("RGB", (size, size), (160, 160, 160))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def curves_png(hist: list[dict], out: Path) -> tuple[Path, Path]:
    """(validation curves PNG, loss and lr PNG)."""
    from tools.plots import epoch_panels

    epochs = [h["epoch"] for h in hist]
    panels = ["mAP"] + sorted({k for h in hist for k in h.get("scenarios", {})})

    def draw(ax, panel):
        ours = [h["mAP"] if panel == "mAP" else h.get("scenarios", {}).get(panel, np.nan) for h in hist]
        rand = [h.get("random", {}).get("mAP") if panel == "mAP" else h.get("random", {}).get("scenarios", {}).get(panel)
                for h in hist]
        ax.plot(epochs, ours, marker="o", ms=3, label="validation")
        if all(r is not None for r in rand):
            ax.fill_between(epochs, 0, rand, color="grey", alpha=0.25, label="random ranking")
        ax.set_title("all queries" if panel == "mAP" else panel, fontsize=10)
        ax.set_ylim(0, max(0.05, np.nanmax(ours) * 1.15))

    val_path = epoch_panels(panels, draw, out / "curves.png", dpi=90)

    def draw_train(ax, panel):
        key, colour = ("train_loss", "tab:blue") if panel == "training loss" else ("lr", "tab:orange")
        ax.plot(epochs, [h.get(key, np.nan) for h in hist], marker="o", ms=3, color=colour, label=panel)
        ax.set_title(panel if key == "train_loss" else "learning rate (end of epoch)", fontsize=10)

    loss_path = epoch_panels(["training loss", "learning rate"], draw_train, out / "loss_lr.png", dpi=90, height=2.8)
    return val_path, loss_path


def gallery_rows(run: Path, queries_per_scenario: int, top_k: int, seed: int = 0) -> list[dict]:
    """Per scenario, the worst queries by AP and then random ones: query, top-k (id, score, hit), first true rank."""
    from omegaconf import OmegaConf

    from core.config import component
    from core.evaluate import score_scenarios
    from core.plugins import build_registries
    from core.retrieval import build_steps, predict
    from tools.ensemble import fold_scenarios, read_oof

    image_ids, scenarios = fold_scenarios(run)
    emb = read_oof(run, image_ids)
    cfg = OmegaConf.load(run / "config.yaml")
    steps = build_steps(component(cfg, "postprocess"), build_registries(cfg.plugins)["postprocess"])
    index = {img: i for i, img in enumerate(image_ids)}
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    whale = dict(zip(split["image_id"], split["whale_id"]))
    preds = predict(scenarios, emb, index, steps)
    _, per_query = score_scenarios(preds, scenarios, details=True)
    ap = dict(zip(per_query["query_id"], per_query["ap"]))
    by_query = {q: g.sort_values("score", ascending=False, kind="stable") for q, g in preds.groupby("query_id")}
    rng = np.random.default_rng(seed)
    rows = []
    for sc in scenarios:
        qs = sc.queries.assign(ap=sc.queries["query_id"].map(ap).fillna(0.0)).sort_values("ap", kind="stable")
        worst = list(qs["query_id"][: max(1, queries_per_scenario - 1)])
        rest = [q for q in qs["query_id"] if q not in worst]
        picked = worst + list(rng.choice(rest, min(len(rest), queries_per_scenario - len(worst)), replace=False))
        db = list(dict.fromkeys(sc.database["database_image_id"]))
        for qid in picked:
            q_img = sc.queries.set_index("query_id").loc[qid, "query_image_id"]
            ranked = by_query.get(qid, pd.DataFrame(columns=["database_image_id", "score"]))
            top = [(d, float(s), whale.get(d) == whale.get(q_img)) for d, s in
                   zip(ranked["database_image_id"][:top_k], ranked["score"][:top_k])]
            first_true = None
            if not any(hit for _, _, hit in top):  # where the first true match is, by cosine over the whole database
                cand = [d for d in db if d != q_img]
                sims = emb[[index[d] for d in cand]] @ emb[index[q_img]]
                order = np.argsort(-sims, kind="stable")
                hits = [r + 1 for r, i in enumerate(order) if whale.get(cand[i]) == whale.get(q_img)]
                first_true = hits[0] if hits else None
            rows.append({"scenario": sc.name, "query_id": qid, "query": q_img, "ap": float(ap.get(qid, 0.0)),
                         "top": top, "first_true_rank": first_true})
    return rows


def gallery_html(rows: list[dict], files: dict[str, str], rotate: bool) -> str:
    parts, current = [], None
    for r in rows:
        if r["scenario"] != current:
            current = r["scenario"]
            parts.append(f"<h3>{html.escape(current)}</h3>")
        cells = [f'<div class="thumb query"><img src="{thumbnail(files.get(r["query"], ""), rotate=rotate)}" '
                 f'alt="query {html.escape(r["query"])}">query<br>AP {r["ap"]:.2f}</div>']
        for d, s, hit in r["top"]:
            cells.append(f'<div class="thumb {"hit" if hit else "miss"}"><img src="{thumbnail(files.get(d, ""), rotate=rotate)}" '
                         f'alt="{html.escape(d)}">{s:.3f}</div>')
        if r["first_true_rank"] is not None:
            cells.append(f'<div class="note">first true match at rank {r["first_true_rank"]}</div>')
        elif not any(h for _, _, h in r["top"]):
            cells.append('<div class="note">no true match in the database</div>')
        parts.append(f'<div class="gallery" data-query="{html.escape(r["query_id"])}">' + "".join(cells) + "</div>")
    return "\n".join(parts)


def build_report(run: Path, out: Path | None = None, queries: int = 3, top_k: int = 6, explain: bool = True) -> dict:
    started = time.time()
    run = Path(run)
    for name in ("config.yaml", "metrics.json", "history.jsonl", "split.csv", "oof.npz"):
        if not (run / name).is_file():
            raise RunError(f"{run}: no {name}; a report needs a finished run of this whaleid (retrain older runs)")
    out = out or run / "report.html"
    assets = out.parent / (out.stem + "_files")
    assets.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    from core.data import read_metadata

    cfg = OmegaConf.load(run / "config.yaml")
    metrics = json.loads((run / "metrics.json").read_text())
    hist = history(run)
    val_png, loss_png = curves_png(hist, assets)
    files = dict(zip(*[read_metadata(cfg.data.root, require_identity=False)[c] for c in ("image_id", "file")]))
    rotate = bool(cfg.data.get("rotate_landscape", False))
    rows = gallery_rows(run, queries, top_k)
    explained = []
    if explain:
        from tools.explain import ExplainError, explain as explain_pair, load_run_model

        try:
            model_cfg = load_run_model(run)
            seen = set()
            for r in rows:
                for wanted in (True, False):  # the first hit and the first false hit of each gallery
                    pair = next(((r["query"], d) for d, _, hit in r["top"] if hit == wanted), None)
                    if pair and pair not in seen and len(explained) < 2 * len({x["scenario"] for x in rows}):
                        seen.add(pair)
                        png = assets / f"pair_{len(explained)}.png"
                        info = explain_pair(run, pair[0], pair[1], png, model_cfg=model_cfg)
                        explained.append({**info, "hit": wanted, "scenario": r["scenario"]})
        except ExplainError as exc:
            explained.append({"error": str(exc)})
    best = metrics
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.4f}</td><td>{best.get('random', {}).get('scenarios', {}).get(k, float('nan')):.4f}</td></tr>"
                    for k, v in best.get("scenarios", {}).items())
    warnings = "".join(f'<p class="warn">{html.escape(w["message"])}. Hint: {html.escape(w.get("hint", ""))}</p>'
                       for w in best.get("warnings", []))
    pairs = "".join(
        f'<figure><img src="{jpeg_data(Path(e["png"]))}" alt="pair {html.escape(e["query"])} {html.escape(e["db"])}">'
        f'<figcaption>{html.escape(e["scenario"])}: {"first hit" if e["hit"] else "first false hit"}, '
        f'cosine {e["cosine"]:.3f}</figcaption></figure>' if "png" in e else f'<p class="warn">{html.escape(e["error"])}</p>'
        for e in explained)
    lift = best.get("lift")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>whaleid report: {html.escape(run.name)}</title>
<style>{CSS}</style></head><body>
<h1>whaleid report: {html.escape(str(run))}</h1>
<section id="summary"><p>Best validation mAP <b>{best['mAP']:.4f}</b> at epoch {best.get('epoch')} (random ranking
{best.get('random', {}).get('mAP', float('nan')):.4f}, lift {f'{lift:.2f}x' if lift else 'n/a'}); {len(hist)} evaluations.</p>{warnings}</section>
<section id="curves"><h2>Curves</h2><img src="{png_data(val_png)}" alt="validation curves">
<img src="{png_data(loss_png)}" alt="loss and learning rate"></section>
<section id="scenarios"><h2>Best epoch per scenario</h2><table><tr><th>scenario</th><th>mAP</th><th>random</th></tr>{table}</table></section>
<section id="galleries"><h2>Retrieval galleries</h2><p>Query (black frame), then its top {top_k}: green = same whale,
red = another whale; worst queries by AP first, then random ones.</p>{gallery_html(rows, files, rotate)}</section>
<section id="explanations"><h2>Pair explanations</h2><p>Where the two embeddings agree: Grad-CAM of their cosine
similarity on each photo's last feature map (tools.explain).</p>{pairs}</section>
<section id="config"><h2>Config</h2><pre>{html.escape((run / 'config.yaml').read_text())}</pre></section>
</body></html>"""
    out.write_text(page)
    return {"html": str(out), "bytes": out.stat().st_size, "galleries": len(rows), "explanations": len(explained),
            "seconds": round(time.time() - started, 1), "pngs": [str(val_png), str(loss_png)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m tools.report runs/demo  (writes runs/demo/report.html)",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished run folder")
    p.add_argument("--out", type=Path, help="HTML file to write (default RUN/report.html)")
    p.add_argument("--queries", type=int, default=3, help="gallery queries per scenario (default 3)")
    p.add_argument("--top-k", type=int, default=6, help="database images per gallery row (default 6)")
    p.add_argument("--no-explain", action="store_true", help="leave out the pair explanations (no model is loaded)")
    args = p.parse_args(argv)
    try:
        info = build_report(args.run, args.out, args.queries, args.top_k, not args.no_explain)
    except RunError as exc:
        p.exit(2, f"error: {exc}\n")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
