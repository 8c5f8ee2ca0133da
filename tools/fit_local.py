"""Fit ``local_match``'s fusion on a run's validation whales and add the step to the run's config.

    python -m tools.fit_local RUN [--shortlist 50] [--detector sift] [--max-side 512] [--dry-run]

RUN is a run folder ``core/run.py`` wrote (its ``split.csv`` and ``oof.npz``: the validation fold's images and
their embeddings at the best epoch; the photo files come from its ``data.root``). Its validation scenarios are
ranked as the run ranks them, with the ranking step's ``top_k`` widened to the shortlist; every query's
shortlist is matched (``plugins/postprocess/local_match.py``), and the logistic P(same whale | global score,
inliers) is fitted on those pairs, labelled by the validation whales. Nothing of the test set is read.

It prints the validation mAP of the global ranking and of the fused one (the fused figure is in sample: the
fusion was fitted on those pairs), the pairs and the seconds matching took, and writes ``RUN/local_match.json``.
Unless ``--dry-run``, RUN's ``config.yaml`` then gets the fitted step after its ranking step, so
``submission.build`` packs it (``config.yaml.before-local`` keeps the old one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def fit_run(run: Path, options: dict) -> dict:
    from omegaconf import OmegaConf

    from core.data import read_metadata
    from core.plugins import build_registries
    from core.retrieval import build_steps, predict
    from core.training.evaluate import score_scenarios
    from core.training.runs import fold_scenarios, read_oof
    from plugins.postprocess.local_match import LocalMatch, fit_fusion

    cfg = OmegaConf.load(run / "config.yaml")
    image_ids, scenarios = fold_scenarios(run)
    emb = read_oof(run, image_ids)
    meta = read_metadata(cfg.data.root, require_identity=False)
    files = dict(zip(meta["image_id"].astype(str), meta["file"]))
    views = dict(zip(meta["image_id"].astype(str), meta["viewpoint"]))
    registries = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])
    specs = [dict(s) for s in OmegaConf.to_container(cfg.postprocess, resolve=True) if s["name"] != "local_match"]
    ranking = max(i for i, s in enumerate(specs) if "top_k" in s or s["name"] in ("knn", "db_anchor_rerank"))
    top_k = int(specs[ranking].get("top_k", 20))
    index = {img: i for i, img in enumerate(image_ids)}
    global_steps = build_steps(specs, registries["postprocess"])
    baseline = score_scenarios(predict(scenarios, emb, index, global_steps, views, files), scenarios)

    wide = [dict(s) for s in specs]
    wide[ranking]["top_k"] = max(top_k, int(options["shortlist"]))
    step = LocalMatch(**dict(options, top_k=top_k))
    step.record = []
    started = time.time()
    predict(scenarios, emb, index, build_steps(wide, registries["postprocess"]) + [step], views, files)
    seconds = time.time() - started
    truth = {(str(q), str(d)) for sc in scenarios for q, d in zip(sc.labels["query_id"], sc.labels["database_image_id"])}
    g, n, same = [], [], []
    for query, candidates, scores, counts in step.record:
        g += list(scores)
        n += list(counts)
        same += [(str(query), str(c)) in truth for c in candidates]
    if not any(same) or all(same):
        raise ValueError(f"{run}: the validation shortlists hold {sum(same)} true pairs of {len(same)}; the fusion "
                         "needs both kinds")
    fusion = fit_fusion(g, n, same)
    step.record, step.fusion = None, fusion
    fused = score_scenarios(predict(scenarios, emb, index, build_steps(wide, registries["postprocess"]) + [step],
                                    views, files), scenarios)
    spec = dict({k: v for k, v in options.items() if k not in ("workers", "cache_dir")}, name="local_match",
                top_k=top_k, fusion=fusion)
    return {"run": str(run), "fusion": fusion, "spec": spec, "ranking_step": ranking, "shortlist": int(options["shortlist"]),
            "pairs": len(same), "true_pairs": int(sum(same)), "queries": sum(len(sc.queries) for sc in scenarios), "match_seconds": round(seconds, 2),
            "photos_with_keypoints": sum(1 for v in step.cache.values() if len(v[0])),
            "photos": len(step.cache), "validation_global": baseline, "validation_fused_in_sample": fused}


def write_config(run: Path, fitted: dict) -> None:
    from omegaconf import OmegaConf

    path = run / "config.yaml"
    cfg = OmegaConf.load(path)
    specs = [s for s in OmegaConf.to_container(cfg.postprocess, resolve=True) if s["name"] != "local_match"]
    specs[fitted["ranking_step"]]["top_k"] = max(int(specs[fitted["ranking_step"]].get("top_k", 20)), fitted["shortlist"])
    specs.insert(fitted["ranking_step"] + 1, fitted["spec"])
    backup = run / "config.yaml.before-local"
    if not backup.exists():
        backup.write_text(path.read_text())
    cfg.postprocess = specs
    tmp = path.with_suffix(".yaml.tmp")
    OmegaConf.save(cfg, tmp)
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fit_local", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder with split.csv and oof.npz")
    p.add_argument("--shortlist", type=int, default=50, help="candidates matched per query")
    p.add_argument("--detector", choices=("sift", "orb", "akaze"), default="sift")
    p.add_argument("--max-keypoints", type=int, default=500)
    p.add_argument("--max-side", type=int, default=512, help="the photo's longer side in px for keypoints")
    p.add_argument("--ratio", type=float, default=0.8, help="Lowe's ratio test")
    p.add_argument("--mirror", choices=("opposite", "never", "always"), default="opposite")
    p.add_argument("--workers", type=int, default=None, help="matching threads")
    p.add_argument("--dry-run", action="store_true", help="fit and report, leave config.yaml as it is")
    args = p.parse_args(argv)
    options = {"shortlist": args.shortlist, "detector": args.detector, "max_keypoints": args.max_keypoints,
               "max_side": args.max_side, "ratio": args.ratio, "mirror": args.mirror, "workers": args.workers}
    try:
        fitted = fit_run(args.run, options)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (args.run / "local_match.json").write_text(json.dumps(fitted, indent=1))
    f = fitted["fusion"]
    print(f"{args.run}: {fitted['pairs']} validation pairs ({fitted['true_pairs']} of one whale) from the top "
          f"{fitted['shortlist']}; matched in {fitted['match_seconds']} s "
          f"({1000 * fitted['match_seconds'] / max(fitted['pairs'], 1):.1f} ms a pair)")
    print(f"fusion: P = sigmoid({f['a']:.3f} * global + {f['b']:.3f} * log(1 + inliers) + {f['c']:.3f})")
    print(f"validation mAP: global {fitted['validation_global']['mAP']:.4f}, fused "
          f"{fitted['validation_fused_in_sample']['mAP']:.4f} (in sample)")
    if not args.dry_run:
        write_config(args.run, fitted)
        print(f"added local_match to {args.run / 'config.yaml'} (the old one: config.yaml.before-local)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
