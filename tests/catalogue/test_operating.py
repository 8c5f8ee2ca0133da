"""Decisions at an error rate the user chooses: the operating points, the whale-level verifier and its fitter,
and the reviewer's simulated workload (catalogue.deciding.operating, catalogue.deciding.verifier, core.logistic.fit_logistic)."""

from __future__ import annotations

import numpy as np
import pytest

from catalogue.deciding import operating
from catalogue.deciding import verifier as vf
from catalogue.deciding.match import Candidate
from catalogue.deciding.open_set import NEW
from core.logistic import fit_logistic


def calibrated_photos(n: int, seed: int) -> dict:
    """Photos whose P(top) is honest: a known photo's top whale is right with probability p, and a photo whose
    top is wrong is a new whale half of the time."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.6, 0.6, n)
    right = rng.random(n) < p
    is_new = ~right & (rng.random(n) < 0.9 * (1 - p))
    return {"p": list(p), "top_right": list(right), "is_new": list(is_new)}


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
def test_an_operating_point_holds_its_error_rate_on_fresh_photos(rate):
    fit_on, fresh = calibrated_photos(4000, 0), calibrated_photos(4000, 1)
    point = operating.fit(fit_on, rate)
    assert point["new"] < point["accept"] and point["expected_error"] <= rate + 1e-12
    seen = operating.observed(fit_on, point)  # the expected figures are the fitted photos' own
    assert seen["observed_error"] == pytest.approx(point["expected_error"])
    assert seen["observed_decided"] == pytest.approx(point["expected_decided"])
    again = operating.observed(fresh, point)
    assert again["observed_error"] <= 1.5 * rate + 0.01 and again["observed_decided"] > 0.02


def test_a_surer_point_decides_less_and_its_bound_holds_the_rate():
    data = calibrated_photos(1500, 6)
    loose, sure = operating.fit(data, 0.05, confidence=0.5), operating.fit(data, 0.05, confidence=0.95)
    assert sure["expected_decided"] < loose["expected_decided"] and sure["error_bound"] <= 0.05 + 1e-12
    assert sure["error_bound"] > sure["expected_error"] and loose["error_bound"] == pytest.approx(loose["expected_error"])
    assert operating.wilson_upper(0, 100, 1.2816) == pytest.approx(0.0162, abs=1e-4)  # Wilson's bound, by hand
    with pytest.raises(ValueError, match="confidence"):
        operating.fit(data, 0.05, confidence=0.3)


def test_a_looser_rate_decides_more_and_no_point_decides_what_is_always_wrong():
    data = calibrated_photos(2000, 2)
    shares = [operating.fit(data, r)["expected_decided"] for r in (0.01, 0.05, 0.2)]
    assert shares == sorted(shares) and shares[-1] > shares[0]
    wrong = {"p": [0.99, 0.98, 0.01], "top_right": [False, False, False], "is_new": [False, False, False]}
    point = operating.fit(wrong, 0.05)
    assert point["expected_decided"] == 0 and [operating.decide(p, point) for p in wrong["p"]] == ["review"] * 3


def test_the_search_is_the_best_pair_of_thresholds_by_brute_force():
    rng = np.random.default_rng(3)
    data = {"p": list(rng.random(60).round(2)), "top_right": list(rng.random(60) < 0.6),
            "is_new": list(rng.random(60) < 0.3)}
    for rate in (0.05, 0.15):
        best = 0
        values = sorted(set(data["p"]))
        for a in values + [2.0]:
            for t in [-1.0] + values:
                if t >= a:
                    continue
                said = [operating.decide(p, {"accept": a, "new": t}) for p in data["p"]]
                d = [i for i, s in enumerate(said) if s != "review"]
                w = sum((said[i] == "match" and not data["top_right"][i]) or (said[i] == NEW and not data["is_new"][i])
                        for i in d)
                if w <= rate * len(d):
                    best = max(best, len(d))
        point = operating.fit(data, rate, confidence=0.5)  # the held-out error itself
        assert round(point["expected_decided"] * 60) == best
        assert operating.observed(data, point)["decided_photos"] == best


def test_the_reviewers_workload_counts_the_rank_of_the_true_whale():
    c = [Candidate("a", 0.9), Candidate("b", 0.5), Candidate("c", 0.2)]
    ranked, truth = [c, c, c], ["b", NEW, "z"]
    work = operating.workload(ranked, truth)
    assert work["actions"] == 2 + 4 + 4 and work["true_whale_shown"] == 0.5 and work["true_whale_rank_mean"] == 2
    assert operating.workload(ranked, truth, ["match", "review", NEW])["actions"] == 4
    assert operating.review_value(0.5) > operating.review_value(0.9) == pytest.approx(operating.review_value(0.1))


def test_fit_logistic_is_scikit_learns_unpenalised_logistic_and_keeps_monotone_weights_non_negative():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 3))
    y = rng.random(500) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - 0.8 * x[:, 1] + 0.3)))
    w, b = fit_logistic(x, y, ridge=0.0)
    ref = LogisticRegression(C=1e12, max_iter=1000).fit(x, y)
    assert np.allclose(w, ref.coef_[0], atol=1e-4) and b == pytest.approx(ref.intercept_[0], abs=1e-4)
    w, _ = fit_logistic(x, y, monotone=[True, True, False])
    assert w[0] > 0 and w[1] == 0  # a score whose weight would be negative says nothing here: dropped


def photos_with_features(n: int, seed: int):
    """Photos with two candidates each; the true one has a higher score on average and more inliers when the
    pair is of one view class; cross-view pairs have none."""
    rng = np.random.default_rng(seed)
    ranked, rows, truth = [], [], []
    for q in range(n):
        cross = rng.random() < 0.3
        cands, feats = [], []
        for k, whale in enumerate((f"w{q}", f"x{q}")):
            same = k == 0
            score = rng.normal(0.6 if same else 0.45, 0.1)
            inliers = 0 if cross else rng.poisson(20 if same else 4)
            cands.append(Candidate(whale, float(score), [(f"p{q}{k}", float(score))]))
            feats.append([score, score, 0.0, 0 if cross else np.log1p(inliers), 0.0, float(cross), 0.0, 1.0, 5.0, 0.0,
                          0.0])
        m = np.asarray(feats)
        m[:, 2] = m[:, 0] - m[::-1, 0]
        m[:, 9] = m[:, 3] - m[::-1, 3]
        m[:, 10] = m[:, 9] / 2  # two candidates: the median is their mean
        ranked.append(cands)
        rows.append(m)
        truth.append(f"w{q}")
    return ranked, rows, truth


def test_the_verifier_uses_the_evidence_explains_itself_and_round_trips():
    ranked, rows, truth = photos_with_features(400, 5)
    x, y = vf.pairs(ranked, rows, truth)
    model = vf.Verifier(vf.FEATURES).fit(x, y)
    assert model.weights["inliers_same_view"] > 0 and all(model.weights[f] >= 0 for f in vf.MONOTONE)
    again = vf.Verifier.from_dict(model.to_dict())
    assert np.allclose(again.probability(x), model.probability(x))
    why = model.why(rows[0][0])
    assert why and all(name in vf.FEATURES for name, _ in why) and why[0][0] in ("inliers_same_view", "score", "margin",
                                                                                 "best_k", "inlier_margin",
                                                                                 "inliers_over_median")
    chosen = vf.choose(ranked, rows, truth, vf.default_groups(len(ranked)), local=True)
    assert set(chosen["held_out_log_loss"]) == {"verifier", "two_scores"}
    assert chosen["held_out_log_loss"][chosen["model"]] == min(chosen["held_out_log_loss"].values())
    assert len(chosen["cross_fitted"]) == len(ranked)


def test_the_verifier_features_come_from_the_ranking_and_the_catalogue():
    import pandas as pd

    table = pd.DataFrame({"image_id": ["a1", "a2", "b1"], "viewpoint": ["top", "top", "left"],
                          "date": ["2018-06-01", "2019-06-01", "2017-06-01"], "whale_id": ["A", "A", "B"]})
    ranked = [[Candidate("A", 0.8, [("a2", 0.8), ("a1", 0.6)]), Candidate("B", 0.5, [("b1", 0.5)])]]
    rows = vf.features(ranked, [[12, 7]], ["top"], ["2019-07-01"], vf.Context(table), [300])[0]
    f = {name: i for i, name in enumerate(vf.FEATURES)}
    assert rows[0, f["best_k"]] == pytest.approx(0.7) and rows[0, f["margin"]] == pytest.approx(0.3)
    assert rows[1, f["margin"]] == pytest.approx(-0.3)
    assert rows[0, f["inliers_same_view"]] == pytest.approx(np.log1p(12)) and rows[0, f["cross_view"]] == 0
    assert rows[1, f["inliers_cross_view"]] == pytest.approx(np.log1p(7)) and rows[1, f["inliers_same_view"]] == 0
    assert rows[0, f["photos"]] == pytest.approx(np.log1p(2)) and rows[0, f["query_keypoints"]] == pytest.approx(np.log1p(300))
    days = (np.datetime64("2019-07-01") - np.datetime64("2017-06-01")).astype(int)
    assert rows[1, f["years_apart"]] == pytest.approx(np.log1p(days / 365.25))
    assert rows[0, f["inlier_margin"]] == pytest.approx(np.log1p(12) - np.log1p(7))
    assert rows[1, f["inlier_margin"]] == pytest.approx(np.log1p(7) - np.log1p(12))
    three = [ranked[0] + [Candidate("C", 0.4, [("a1", 0.4)])]]
    rows = vf.features(three, [[12, 7, 3]], ["top"], ["2019-07-01"], vf.Context(table), [300])[0]
    assert rows[0, f["inliers_over_median"]] == pytest.approx(np.log1p(12) - np.log1p(7))
    assert rows[2, f["inlier_margin"]] == pytest.approx(np.log1p(3) - np.log1p(12))
    assert vf.features(ranked, None, ["top"], ["2019-07-01"], vf.Context(table))[0][:, f["inlier_margin"]].tolist() == [0, 0]


def test_the_inlier_margin_tells_a_new_whale_from_a_photo_with_many_chance_inliers():
    """Photos differ in how many chance inliers any candidate gets (texture, size); a known photo's whale stands
    out from its other candidates, a new whale's candidates all sit at the photo's level. The inliers alone cannot
    tell a busy new photo from a known one; their margins can, so the verifier with them has the lower held-out
    log-loss and ranks new photos' tops below known photos' better (AUROC)."""
    from catalogue.deciding.open_set import NEW, auroc

    rng = np.random.default_rng(11)
    table_rows, ranked, counts, truth = [], [], [], []
    for q in range(300):
        level = rng.lognormal(2.5, 0.8)  # this photo's chance inliers with any whale
        new = rng.random() < 0.35
        n = rng.poisson(level, 4) + (0 if new else np.r_[rng.poisson(1.5 * level + 10), 0, 0, 0])
        scores = np.sort(rng.normal(0.55, 0.05, 4))[::-1]
        ranked.append([Candidate(f"w{q}_{k}", float(s), [(f"p{q}_{k}", float(s))]) for k, s in enumerate(scores)])
        counts.append([int(v) for v in n])
        truth.append(NEW if new else f"w{q}_0")
        table_rows += [(f"p{q}_{k}", "top", "2018-06-01", f"w{q}_{k}") for k in range(4)]
    import pandas as pd

    context = vf.Context(pd.DataFrame(table_rows, columns=["image_id", "viewpoint", "date", "whale_id"]))
    rows = vf.features(ranked, counts, ["top"] * 300, ["2019-06-01"] * 300, context, [500] * 300)
    groups = vf.default_groups(len(ranked))
    _, y = vf.pairs(ranked, rows, truth)
    without = [f for f in vf.DEFAULT if f not in ("inlier_margin", "inliers_over_median")]
    result = {}
    for name, use in (("with", list(vf.DEFAULT)), ("without", without)):
        p = vf.cross_fitted(use, ranked, rows, truth, groups)
        top = [float(np.max(v)) for v in p]
        result[name] = (vf._log_loss(np.concatenate(p), y), auroc([-t for t in top], [t == NEW for t in truth]))
    assert result["with"][0] < 0.8 * result["without"][0]
    assert result["with"][1] > result["without"][1] + 0.05


def test_identify_refuses_an_error_rate_it_cannot_hold():
    from catalogue.deciding.identify import ScoreRule, operating_point

    with pytest.raises(ValueError, match="run `whaleid calibrate` again"):
        operating_point(ScoreRule(0.5, 0.8), 0.05)  # an uncalibrated catalogue has no held-out photos
    with pytest.raises(ValueError, match="between 0 and 1"):
        operating_point(ScoreRule(0.5, 0.8), 5.0)
