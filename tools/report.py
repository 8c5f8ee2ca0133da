"""A run report: one self-contained HTML page (every image inlined, no network).

    python -m tools.report RUN [--out RUN/report.html] [--queries 3] [--top-k 6] [--no-explain]
    python -m tools.report --zip submission.zip --data TEST_DIR [--labels LABELS.csv] [--out FILE.html]

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
6. when the run has been through ``make identify-demo``: open-set identification scores beside the top-1
   cosine baseline, the reliability diagram and the known and new whales' score distributions;
7. the resolved config.
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

from core.training.runs import RunError, history

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.warn{background:#fff3cd;padding:6px 10px;border-left:4px solid #e0a800}
.gallery{display:flex;gap:6px;align-items:flex-start;margin:8px 0;flex-wrap:wrap}
.thumb{text-align:center;font-size:11px}
.thumb img{display:block;border:4px solid #999}
.thumb.query img{border-color:#333}.thumb.hit img{border-color:#1a9a3a}.thumb.miss img{border-color:#d0302f}
.thumb.unlabelled img{border-color:#bbb}
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
    """Gallery rows of a training run's validation fold, from its saved embeddings and postprocess chain."""
    from core.config import component
    from core.plugins import build_registries
    from core.retrieval import build_steps
    from core.training.runs import fold_scenarios, read_oof, run_config

    image_ids, scenarios = fold_scenarios(run)
    emb = read_oof(run, image_ids)
    cfg = run_config(run)
    steps = build_steps(component(cfg, "postprocess"), build_registries(cfg.plugins)["postprocess"])
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    whale = dict(zip(split["image_id"], split["whale_id"]))
    truth = {q: {d for d in sc.database["database_image_id"] if d != i and whale.get(d) == whale.get(i)}
             for sc in scenarios for q, i in zip(sc.queries["query_id"], sc.queries["query_image_id"])}
    return rank_gallery(scenarios, emb, {img: i for i, img in enumerate(image_ids)}, steps, truth,
                        queries_per_scenario, top_k, seed)


def rank_gallery(scenarios, emb: np.ndarray, index: dict, steps, truth: dict | None, queries_per_scenario: int,
                 top_k: int, seed: int = 0) -> list[dict]:
    """Per scenario, the worst queries by AP and then random ones (random ones only without ``truth``): the
    query, its top k as (database id, score, hit: True / False / None unknown) and, when no hit is in the top
    k, the rank of the first true match by cosine over the whole database. ``truth``: query id -> true ids."""
    from core.metric import score_scenarios
    from core.retrieval import predict

    preds = predict(scenarios, emb, index, steps)
    ap = {}
    if truth is not None:
        labelled = [type(sc)(sc.name, sc.queries, sc.database, pd.DataFrame(
            [(q, d) for q in sc.queries["query_id"] for d in truth.get(q, ())], columns=["query_id", "database_image_id"]))
            for sc in scenarios]
        _, per_query = score_scenarios(preds, labelled, details=True)
        ap = dict(zip(per_query["query_id"], per_query["ap"]))
    by_query = {q: g.sort_values("score", ascending=False, kind="stable") for q, g in preds.groupby("query_id")}
    rng = np.random.default_rng(seed)
    rows = []
    for sc in scenarios:
        qs = sc.queries.drop_duplicates("query_id")
        qs = qs[qs["query_image_id"].isin(index)]
        if truth is not None:
            qs = qs[qs["query_id"].map(lambda q: bool(truth.get(q)))]
            qs = qs.assign(ap=qs["query_id"].map(ap).fillna(0.0)).sort_values("ap", kind="stable")
            worst = list(qs["query_id"][: max(1, queries_per_scenario - 1)])
        else:
            worst = []
        rest = [q for q in qs["query_id"] if q not in worst]
        picked = worst + list(rng.choice(rest, min(len(rest), queries_per_scenario - len(worst)), replace=False))
        db = [d for d in dict.fromkeys(sc.database["database_image_id"]) if d in index]
        image_of = dict(zip(qs["query_id"], qs["query_image_id"]))
        for qid in picked:
            q_img = image_of[qid]
            true = truth.get(qid, set()) if truth is not None else None
            ranked = by_query.get(qid, pd.DataFrame(columns=["database_image_id", "score"]))
            top = [(d, float(s), (d in true) if true is not None else None) for d, s in
                   zip(ranked["database_image_id"][:top_k], ranked["score"][:top_k])]
            first_true = None
            if true and not any(hit for _, _, hit in top):
                cand = [d for d in db if d != q_img]
                sims = emb[[index[d] for d in cand]] @ emb[index[q_img]]
                order = np.argsort(-sims, kind="stable")
                hits = [r + 1 for r, i in enumerate(order) if cand[i] in true]
                first_true = hits[0] if hits else None
            rows.append({"scenario": sc.name, "query_id": qid, "query": q_img, "ap": ap.get(qid),
                         "top": top, "first_true_rank": first_true})
    return rows


def gallery_html(rows: list[dict], files: dict[str, str], rotate: bool) -> str:
    parts, current = [], None
    for r in rows:
        if r["scenario"] != current:
            current = r["scenario"]
            parts.append(f"<h3>{html.escape(current)}</h3>")
        ap = f'<br>AP {r["ap"]:.2f}' if r.get("ap") is not None else ""
        cells = [f'<div class="thumb query"><img src="{thumbnail(files.get(r["query"], ""), rotate=rotate)}" '
                 f'alt="query {html.escape(r["query"])}">query{ap}</div>']
        for d, s, hit in r["top"]:
            frame = "unlabelled" if hit is None else "hit" if hit else "miss"
            cells.append(f'<div class="thumb {frame}"><img src="{thumbnail(files.get(d, ""), rotate=rotate)}" '
                         f'alt="{html.escape(d)}">{s:.3f}</div>')
        if r["first_true_rank"] is not None:
            cells.append(f'<div class="note">first true match at rank {r["first_true_rank"]}</div>')
        elif r["top"] and all(h is False for _, _, h in r["top"]):
            cells.append('<div class="note">no true match in the database</div>')
        parts.append(f'<div class="gallery" data-query="{html.escape(r["query_id"])}">' + "".join(cells) + "</div>")
    return "\n".join(parts)


def identify_section(run: Path, assets: Path) -> str:
    """The run's identification (``tools.identify_demo`` / ``whaleid identify --metrics``), when it has one:
    open-set scores beside the baseline, the reliability diagram and the known/new score distributions."""
    path = run / "identify" / "metrics.json"
    if not path.is_file():
        return ""
    from tools.plots import open_set_png

    m = json.loads(path.read_text())
    png = open_set_png(m, assets / "identify.png")
    rows = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{m[key][k]:.4f}</td>" for k in
                   ("baks", "baus", "geometric_mean", "auroc")) + "</tr>"
                   for name, key in (("whaleid (calibrated)", "whaleid"), ("top-1 cosine, threshold from validation",
                                                                            "baseline")) if key in m)
    cal = m.get("calibration") or {}
    fitted = (f"Calibrated on {cal.get('queries')} held-out photos of the run's held-out whales from {cal.get('cut')} "
              f"on ({cal.get('known')} known, {cal.get('new')} new). ") if cal else ""
    points = m.get("operating_points") or {}
    decided = "".join(f"<tr><th>at most {float(r):.0%} wrong</th><td>{p['expected_decided']:.1%}</td><td>"
                      f"{p['observed_decided']:.1%}</td><td>{p['expected_error']:.1%}</td><td>{p['observed_error']:.1%}</td>"
                      f"<td>{p['actions_per_photo']:.2f}</td></tr>" for r, p in points.items())
    if decided:
        every = m["review_all"]["actions_per_photo"]
        decided = ("<table><tr><th>operating point</th><th>decided alone, expected</th><th>observed</th><th>wrong, "
                   "expected</th><th>observed</th><th>reviewer actions a photo</th></tr>" + decided
                   + f"<tr><th>review every photo</th><td>0%</td><td>0%</td><td></td><td></td><td>{every:.2f}</td></tr></table>")
    return f"""<section id="identify"><h2>Named whales: open-set identification</h2><p>{html.escape(fitted)}Test photos
from {html.escape(str(m.get('cut', '?')))} on identified against the catalogue ({m['whaleid']['known']} of known whales,
{m['whaleid']['new']} of new ones).</p><table><tr><th></th><th>BAKS</th><th>BAUS</th><th>geometric mean</th><th>AUROC</th></tr>
{rows}</table>{decided}<img src="{png_data(png)}" alt="reliability diagram and known/new score distributions"></section>"""


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
    identified = identify_section(run, assets)
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
{identified}
<section id="config"><h2>Config</h2><pre>{html.escape((run / 'config.yaml').read_text())}</pre></section>
</body></html>"""
    out.write_text(page)
    return {"html": str(out), "bytes": out.stat().st_size, "galleries": len(rows), "explanations": len(explained),
            "seconds": round(time.time() - started, 1), "pngs": [str(val_png), str(loss_png)]}


def build_zip_report(zip_path: Path, data: Path, out: Path, labels: Path | None = None, queries: int = 3,
                     top_k: int = 6, workers: int = 0) -> dict:
    """Galleries of a submission zip on a test folder (competition layout), embedded once through the
    submission's own inference code; frames green/red when ``labels`` (query_id, database_image_id) are given."""
    from core.bundle import BundleError, opened
    from core.inference import image_files, image_viewpoints
    from core.scenarios import read_scenarios

    started = time.time()
    scenarios = read_scenarios(data, skip_broken=True)
    if not scenarios:
        raise RunError(f"{data}: no readable scenario")
    truth = None
    if labels is not None:
        lab = pd.read_csv(labels, dtype=str)
        truth = lab.groupby("query_id")["database_image_id"].agg(set).to_dict()
    try:
        with opened(zip_path, prefix="whaleid_report_") as bundle:
            needed = sorted({i for sc in scenarios for i in sc.queries["query_image_id"]}
                            | {i for sc in scenarios for i in sc.database["database_image_id"]})
            files = image_files(data, needed)
            emb, ok = bundle.embed(files, "cpu", workers)
            steps, manifest = bundle.steps(), bundle.manifest
    except BundleError as exc:
        raise RunError(str(exc)) from exc
    index = {img: i for i, img in enumerate(needed) if ok[i]}
    rows = rank_gallery(scenarios, emb, index, steps, truth, queries, top_k)
    file_of = dict(zip(needed, files))
    rotate = False  # thumbnails show the test photos as stored
    views = image_viewpoints(data)
    scored = ""
    if truth is not None:
        from core.metric import score_scenarios
        from core.retrieval import predict

        preds = predict(scenarios, emb, index, steps, views)
        labelled = [type(sc)(sc.name, sc.queries, sc.database, lab[lab["query_id"].isin(sc.queries["query_id"])])
                    for sc in scenarios]
        res = score_scenarios(preds, labelled)
        scored = (f"<p>mAP <b>{res['mAP']:.4f}</b> on the given labels; "
                  + ", ".join(f"{html.escape(k)} {v:.4f}" for k, v in res["scenarios"].items()) + "</p>")
    out.parent.mkdir(parents=True, exist_ok=True)
    legend = ": green = a true match, red = not" if truth is not None else " (no labels given: grey frames)"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>whaleid submission report: {html.escape(zip_path.name)}</title>
<style>{CSS}</style></head><body>
<h1>whaleid submission report: {html.escape(str(zip_path))} on {html.escape(str(data))}</h1>
<section id="summary"><p>{len(manifest["models"])} model(s), {len(scenarios)} scenarios, {len(needed)} images
({int((~ok).sum())} unreadable).</p>{scored}</section>
<section id="galleries"><h2>Retrieval galleries</h2><p>Query (black frame), then its top {top_k}{legend}.</p>
{gallery_html(rows, file_of, rotate)}</section>
<section id="config"><h2>Manifest</h2><pre>{html.escape(json.dumps({k: v for k, v in manifest.items() if k != "files"}, indent=2))}</pre></section>
</body></html>"""
    out.write_text(page)
    return {"html": str(out), "bytes": out.stat().st_size, "galleries": len(rows), "seconds": round(time.time() - started, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m tools.report runs/demo  (writes runs/demo/report.html)",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, nargs="?", help="a finished run folder")
    p.add_argument("--zip", type=Path, help="instead of a run: a submission zip, with --data (and --labels)")
    p.add_argument("--data", type=Path, help="a test folder in the competition layout, for --zip")
    p.add_argument("--labels", type=Path, help="true matches (query_id, database_image_id), for --zip")
    p.add_argument("--out", type=Path, help="HTML file to write (default RUN/report.html)")
    p.add_argument("--queries", type=int, default=3, help="gallery queries per scenario (default 3)")
    p.add_argument("--top-k", type=int, default=6, help="database images per gallery row (default 6)")
    p.add_argument("--no-explain", action="store_true", help="leave out the pair explanations (no model is loaded)")
    args = p.parse_args(argv)
    if (args.run is None) == (args.zip is None) or (args.zip and not args.data):
        p.error("give a run folder, or --zip with --data")
    try:
        if args.zip:
            info = build_zip_report(args.zip, args.data, args.out or args.zip.with_suffix(".html"), args.labels,
                                    args.queries, args.top_k)
        else:
            info = build_report(args.run, args.out, args.queries, args.top_k, not args.no_explain)
    except RunError as exc:
        p.exit(2, f"error: {exc}\n")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
