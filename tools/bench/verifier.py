"""Which model decides best on held-out whales: the whale-level verifier against what it replaces and against
richer models, on one catalogue and one run's held-out folds.

    python -m tools.bench.verifier --db RUN/identify/catalogue.sqlite --run RUN [--local]

The pairs are ``whaleid calibrate``'s (``catalogue.deciding.held_out.pooled``: each fold's held-out whales scored by
that fold's model). Every model is fitted on all folds but one and scored on the one left out (a single run:
five groups of photos): the held-out log-loss and AUROC of its P(same whale) over every candidate pair, the
top-1 accuracy of its re-ranking on known photos, and the share of photos decided without review at 1% and 5%
wrong decisions (``catalogue.deciding.operating`` on the held-out P, the point fitted and scored on the same photos).

Models: the global score alone (a one-feature logistic), the two-score fusion (score and inliers), the verifier
(``catalogue.deciding.verifier``: a monotone logistic on its default features), the verifier with every pairwise
interaction, the verifier with the two features it leaves out (``verifier.SPLIT_ARTEFACTS``), and
scikit-learn's histogram gradient boosting with the verifier's monotone constraints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _standard(x, mean=None, scale=None):
    mean = x.mean(0) if mean is None else mean
    scale = np.where(x.std(0) > 0, x.std(0), 1.0) if scale is None else scale
    return (x - mean) / scale, mean, scale


def _interactions(z):
    d = z.shape[1]
    return np.concatenate([z] + [z[:, [i]] * z[:, [j]] for i in range(d) for j in range(i + 1, d)], 1)


def models(local: bool) -> dict:
    from catalogue.deciding import verifier as vf
    from core.logistic import fit_logistic

    every = [f for f in vf.DEFAULT if local or f not in vf.LOCAL]
    leaky = [f for f in vf.FEATURES if local or f not in vf.LOCAL]

    def logistic(use, interact=False):
        cols = [vf.FEATURES.index(f) for f in use]

        def fit(x, y):
            z, mean, scale = _standard(x[:, cols])
            z = _interactions(z) if interact else z
            mono = [f in vf.MONOTONE for f in use] + [False] * (z.shape[1] - len(use))
            w, b = fit_logistic(z, y, monotone=mono, ridge=1e-2)

            def predict(x2):
                z2, _, _ = _standard(x2[:, cols], mean, scale)
                z2 = _interactions(z2) if interact else z2
                return 1 / (1 + np.exp(-np.clip(z2 @ w + b, -60, 60)))
            return predict
        return fit

    def boosted(x, y):
        from sklearn.ensemble import HistGradientBoostingClassifier

        cols = [vf.FEATURES.index(f) for f in every]
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=0,
                                               monotonic_cst=[1 if f in vf.MONOTONE else 0 for f in every])
        model.fit(x[:, cols], y)
        return lambda x2: model.predict_proba(x2[:, cols])[:, 1]

    out = {"score alone": logistic(["score"]),
           "two scores": logistic([f for f in vf.TWO_SCORES if local or f not in vf.LOCAL]),
           "verifier (chosen)": logistic(every), "verifier + interactions": logistic(every, interact=True),
           "verifier + years and photo count (split artefacts)": logistic(leaky),
           "boosted trees": boosted}
    return out


def compare(split: dict, local: bool) -> dict:
    from catalogue.deciding import operating
    from catalogue.deciding import verifier as vf
    from catalogue.deciding.open_set import NEW, auroc

    ranked, rows, truth, groups = split["ranked"], split["rows"], split["truth"], np.asarray(split["groups"])
    results = {}
    for name, fit in models(local).items():
        p_all = [None] * len(ranked)
        for g in np.unique(groups):
            train = [i for i in range(len(ranked)) if groups[i] != g]
            x, y = vf.pairs([ranked[i] for i in train], [rows[i] for i in train], [truth[i] for i in train])
            predict = fit(x, y.astype(float))
            for i in np.flatnonzero(groups == g):
                p_all[i] = predict(rows[i]) if len(rows[i]) else np.zeros(0)
        _, y = vf.pairs(ranked, rows, truth)
        p = np.clip(np.concatenate([v for v in p_all if len(v)]), 1e-6, 1 - 1e-6)
        rescored = vf.with_scores(ranked, p_all)
        known = [i for i, t in enumerate(truth) if t != NEW]
        top1 = np.mean([bool(rescored[i]) and rescored[i][0].whale_id == truth[i] for i in known])
        data = operating.evidence(rescored, truth)
        results[name] = {"log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
                         "auroc": auroc(p, y), "top1_known": float(top1),
                         **{f"decided_at_{r:g}": operating.fit(data, r)["expected_decided"] for r in (0.01, 0.05)}}
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.verifier", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", type=Path, required=True, help="a catalogue built from RUN's training data")
    p.add_argument("--run", type=Path, required=True, help="a cross-validated run, or one with a validation fold")
    p.add_argument("--local", action="store_true", help="with keypoint inliers (the catalogue's stored keypoints)")
    p.add_argument("--detector", help="the keypoints of the inliers (default: those the catalogue was calibrated "
                   "with, else the local_match step's default)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    args = p.parse_args(argv)

    from catalogue.deciding import calibration, held_out
    from catalogue.deciding import out_of_fold
    from catalogue.records.store import Catalogue

    cat = Catalogue.open(args.db)
    table, emb = cat.photos()
    stored = cat.meta.get("calibration")
    cat.close()
    evidence = None
    if args.local:
        from catalogue.deciding.local import Evidence

        options = dict(calibration.Calibration.from_json(stored).local.get("options", {})) if stored else {}
        if args.detector:
            options["detector"] = args.detector
        evidence = Evidence(args.db, options)
        print(f"inliers from {evidence.options['detector']} keypoints")
    split = held_out.pooled(table, out_of_fold.folds(args.run, table, emb, "cpu", args.workers,
                                                                               db=args.db), evidence=evidence)
    results = compare(split, args.local)
    print(f"{len(split['truth'])} held-out photos, {sum(len(r) for r in split['ranked'])} candidate pairs, "
          f"{len(set(split['groups']))} held-out groups")
    print(f"{'model':52s} {'log-loss':>9s} {'AUROC':>7s} {'top-1':>7s} {'at 1%':>7s} {'at 5%':>7s}")
    for name, r in results.items():
        print(f"{name:52s} {r['log_loss']:9.4f} {r['auroc']:7.4f} {r['top1_known']:7.3f} {r['decided_at_0.01']:7.1%} "
              f"{r['decided_at_0.05']:7.1%}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
