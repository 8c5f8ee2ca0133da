"""``local_match``: keypoints on the photo files, ratio-test matching, RANSAC inliers, the fusion with the global
score fitted on validation pairs, the cache, the shortlist, mirrored views; and ``tools.fit_local`` on a run."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from core.retrieval import RetrievalContext  # noqa: E402
from plugins.postprocess.local_match import LocalMatch, fit_fusion, ransac_similarity  # noqa: E402

FUSION = {"a": 10.0, "b": 2.0, "c": -10.0}


def textured(seed: int, size=(220, 480)) -> np.ndarray:
    """A grey photo full of blobs and lines (plenty of keypoints), the same for the same seed."""
    rng = np.random.default_rng(seed)
    img = np.full(size, 90, np.uint8)
    for _ in range(60):
        c = (int(rng.integers(0, size[1])), int(rng.integers(0, size[0])))
        cv2.circle(img, c, int(rng.integers(3, 12)), int(rng.integers(0, 255)), -1)
        cv2.line(img, c, (c[0] + int(rng.integers(-40, 40)), c[1] + int(rng.integers(-40, 40))), int(rng.integers(0, 255)), 2)
    return img


def save(path, img):
    cv2.imwrite(str(path), img)
    return str(path)


def rotated(img, degrees, scale):
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
    return cv2.warpAffine(img, m, (w, h), borderValue=90)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    base = textured(1)
    return {"a": save(d / "a.png", base), "a_moved": save(d / "a_moved.png", rotated(base, 12, 0.9)),
            "a_mirror": save(d / "a_mirror.png", np.ascontiguousarray(base[:, ::-1])),
            "b": save(d / "b.png", textured(2)), "c": save(d / "c.png", textured(3)),
            "flat": save(d / "flat.png", np.full((220, 480), 128, np.uint8)), "tiny": save(d / "tiny.png", textured(4, (5, 5))),
            "broken": save(d / "broken.png", textured(5)).replace("broken.png", "not_there.png")}


def ctx_for(query: str, db: list[str], photos, scores=None, views=None):
    """One query ranked by a global step (scores falling in database order) over ``db``."""
    scores = np.linspace(0.9, 0.5, len(db)) if scores is None else np.asarray(scores, np.float64)
    ctx = RetrievalContext(["s-q"], [query], db, np.zeros((1, 2), np.float32), np.zeros((len(db), 2), np.float32))
    ctx.ranked = [(np.arange(len(db)), scores)]
    ctx.query_files, ctx.db_files = [photos[query]], [photos[d] for d in db]
    if views:
        ctx.query_viewpoints, ctx.db_viewpoints = [views[0]], list(views[1])
    return ctx


def test_the_same_photo_moved_has_many_inliers_another_whale_few(photos):
    step = LocalMatch()
    q = step.features(photos["a"])
    assert len(q[0]) > 100 and q[1].shape == (len(q[0]), 128) and q[1].dtype == np.uint8
    same, other = step.inliers(q, step.features(photos["a_moved"])), step.inliers(q, step.features(photos["b"]))
    assert same > 50 and other < 15, (same, other)
    assert ransac_similarity(np.zeros((5, 2), np.float32), np.zeros((5, 2), np.float32), 8, 64) == 0  # degenerate


def test_local_evidence_lifts_a_true_match_from_the_bottom_of_the_shortlist(photos):
    ctx = LocalMatch(fusion=FUSION, top_k=3)(ctx_for("a", ["b", "c", "a_moved"], photos))
    order, scores = ctx.ranked[0]
    assert list(order) == [2, 0, 1] and np.all(np.diff(scores) <= 0) and 0 <= scores.min() and scores.max() <= 1


def test_a_photo_without_keypoints_keeps_the_global_order(photos):
    for query in ("flat", "tiny", "broken"):
        ctx = LocalMatch(fusion=FUSION)(ctx_for(query, ["b", "a", "c"], photos))
        assert list(ctx.ranked[0][0]) == [0, 1, 2], query
    assert len(LocalMatch().features(photos["flat"])[0]) == 0


def test_an_unfitted_step_passes_the_ranking_through_and_needs_a_ranking_first(photos):
    ctx = ctx_for("a", ["b", "a_moved"], photos)
    before = [(i.copy(), s.copy()) for i, s in ctx.ranked]
    after = LocalMatch()(ctx)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(before, after.ranked))
    empty = RetrievalContext(["s-q"], ["a"], ["b"], np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32))
    with pytest.raises(RuntimeError, match="ranking step"):
        LocalMatch(fusion=FUSION)(empty)
    with pytest.raises(ValueError, match="a, b >= 0"):
        LocalMatch(fusion={"a": 1.0, "b": -1.0, "c": 0.0})


def test_the_shortlist_bounds_the_work_and_the_rest_keeps_its_order(photos):
    db = ["b", "c", "a_moved", "flat", "a_mirror"]
    step = LocalMatch(fusion=FUSION, shortlist=2, top_k=5)
    ctx = step(ctx_for("a", db, photos))
    assert step.pairs_matched == 2  # one query, two candidates matched: a_moved (3rd) is not looked at
    order, scores = ctx.ranked[0]
    assert set(order[:2]) == {0, 1} and list(order[2:]) == [2, 3, 4] and scores[2] < scores[:2].min()


def test_mirrored_views_are_matched_mirrored(photos):
    """A left view against a right view of the same side flipped: matched flipped under ``mirror: opposite``;
    two top views are never flipped, so a mirror image of a top view is not taken for the same whale."""
    lr = (("left"), ["right", "right"])
    opposite = LocalMatch(fusion=FUSION)(ctx_for("a", ["b", "a_mirror"], photos, views=lr))
    never = LocalMatch(fusion=FUSION, mirror="never")(ctx_for("a", ["b", "a_mirror"], photos, views=lr))
    top = LocalMatch(fusion=FUSION)(ctx_for("a", ["b", "a_mirror"], photos, views=("top", ["top", "top"])))
    assert list(opposite.ranked[0][0]) == [1, 0] and list(never.ranked[0][0]) == [0, 1]
    assert list(top.ranked[0][0]) == [0, 1]


def test_the_cache_is_invalidated_when_the_photo_or_the_options_change(photos, tmp_path, monkeypatch):
    path = save(tmp_path / "p.png", textured(7))
    calls = []
    step = LocalMatch(cache_dir=str(tmp_path / "cache"))
    real = step.extract
    monkeypatch.setattr(step, "extract", lambda p, flip: calls.append(p) or real(p, flip))
    first = step.features(path)
    step.features(path)
    assert len(calls) == 1
    import os
    import time

    save(tmp_path / "p.png", textured(8))  # the photo changes: size or time differ
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    second = step.features(path)
    assert len(calls) == 2 and not np.array_equal(first[0], second[0])
    again = LocalMatch(cache_dir=str(tmp_path / "cache"))  # a new run reads the disk cache
    monkeypatch.setattr(again, "extract", lambda p, flip: calls.append(p) or real(p, flip))
    assert np.array_equal(again.features(path)[0], second[0]) and len(calls) == 2
    other = LocalMatch(cache_dir=str(tmp_path / "cache"), max_side=256)  # other options: computed again
    monkeypatch.setattr(other, "extract", lambda p, flip: calls.append(p) or real(p, flip))
    other.features(path)
    assert len(calls) == 3


def test_the_fusion_is_monotone_in_both_scores_and_drops_a_feature_that_points_the_wrong_way():
    rng = np.random.default_rng(0)
    same = rng.uniform(size=4000) < 0.2
    g = np.clip(np.where(same, 0.75, 0.6) + 0.08 * rng.normal(size=same.size), 0, 1)
    n = np.where(same, rng.poisson(20, same.size), rng.poisson(4, same.size))
    f = fit_fusion(g, n, same)
    assert f["a"] > 0 and f["b"] > 0
    step = LocalMatch(fusion=f)
    grid_g, grid_n = np.meshgrid(np.linspace(0, 1, 21), np.arange(0, 60, 3))
    p = step.probability(grid_g, grid_n)
    assert np.all(np.diff(p, axis=0) >= 0) and np.all(np.diff(p, axis=1) >= 0)
    backwards = fit_fusion(g, np.where(same, 0, 30), same)  # more inliers on the wrong pairs: no weight
    assert backwards["b"] == 0 and backwards["a"] > 0
    mean = fit_fusion(g, n, same, kind="mean")  # WildFusion's: each calibrated alone, averaged
    assert mean["kind"] == "mean" and mean["g"]["a"] > 0 and mean["n"]["a"] > 0
    p = LocalMatch(fusion=mean).probability(grid_g, grid_n)
    assert np.all(np.diff(p, axis=0) >= 0) and np.all(np.diff(p, axis=1) >= 0) and 0 < p.min() <= p.max() < 1
    for bad in ({"a": 1.0, "b": -1.0, "c": 0.0}, {"kind": "mean", "g": {"a": -1, "c": 0}, "n": {"a": 1, "c": 0}},
                {"a": 1.0}, {"a": float("nan"), "b": 1.0, "c": 0.0}):
        with pytest.raises(ValueError):
            LocalMatch(fusion=bad)


def test_the_view_fusion_keeps_the_inliers_only_where_the_view_relation_shares_keypoints():
    """``fit_kind: view``: one logistic whose inliers' term is shared by every view relation unless validation
    shows one differs; the inliers of top-against-lateral pairs (no shared keypoints: here pure noise) split off
    and get no weight, those of same-view pairs keep theirs, and a relation too small to tell apart (40 mirrored
    pairs) keeps the shared term rather than losing its inliers; the global weight is shared, so candidates of two
    relations (a lateral query's same-side and mirrored ones) are on one scale up to each relation's base rate;
    the step ranks each pair by its own relation."""
    from plugins.postprocess.local_match import relation

    assert [relation(*v) for v in (("top", "top"), ("left", "left"), ("left", "right"), ("top", "right"),
                                   ("unknown", "top"))] == ["same", "same", "mirrored", "cross", "unknown"]
    rng = np.random.default_rng(1)
    m = 6000
    rel = rng.choice(["same", "cross"], size=m, p=[0.6, 0.4]).astype(object)
    rel[:40] = "mirrored"  # 40 pairs: too few of either kind to tell apart from the shared term
    same = rng.uniform(size=m) < 0.2
    g = np.clip(np.where(same, 0.72, 0.6) + 0.08 * rng.normal(size=m), 0, 1)
    n = np.where((rel != "cross") & same, rng.poisson(25, m), rng.poisson(5, m))  # cross: noise
    f = fit_fusion(g, n, same, kind="view", relations=list(rel))
    assert f["kind"] == "view" and f["a"] > 0 and f["b"]["same"] > 0 and f["b"]["cross"] == 0
    assert f["b"]["mirrored"] == f["b"]["same"] == f["b"]["unknown"]  # shared: no pairs to tell them apart
    # mirrored pairs without any local signal, enough of them to show it, split off as the cross pairs do
    rel2 = rel.copy()
    rel2[40:1500] = np.where(rel[40:1500] == "same", "mirrored", rel[40:1500])
    n2 = np.where((rel2 == "same") & same, n, rng.poisson(5, m))
    f2 = fit_fusion(g, n2, same, kind="view", relations=list(rel2))
    assert f2["b"]["same"] > 0 and f2["b"]["mirrored"] == 0 and f2["b"]["cross"] == 0
    step = LocalMatch(fusion=f)
    cross = step.probability([0.7, 0.7], [0, 50], ["cross", "cross"])
    assert cross[0] == cross[1]  # a cross pair's inliers move nothing
    same_p = step.probability([0.7, 0.7], [0, 50], ["same", "same"])
    assert same_p[1] > same_p[0]
    assert set(f) == {"kind", "a", "c", "b", "d"}  # one global weight for every relation, a base rate each
    assert np.allclose(step.probability([0.7], [10]), step.probability([0.7], [10], ["unknown"]))
    records = [("q", ["d"], [0.7], [3])]  # a record without relations (the catalogue's) fits as unknown
    assert LocalMatch(fit_kind="view").fit(records * 3 + [("q", ["e"], [0.2], [0])], {("q", "d")})["fusion"]["kind"] == "view"
    # cross pairs whose global score runs against the truth on validation (true ones lower than false) take the
    # global weight to 0 beside the same pairs' inliers: candidates would tie, so the global score alone ranks
    flat = np.where(rel == "cross", np.where(same, 0.4, 0.5) + 0.08 * rng.normal(size=m), g)
    f = fit_fusion(flat, n, same, kind="view", relations=list(rel))
    assert f["a"] > 0 and f["b"]["cross"] == 0 and all(v == 0 for v in f["b"].values())
    p = LocalMatch(fusion=f).probability([0.5, 0.4, 0.3], [9, 0, 40], ["cross"] * 3)
    assert p[0] > p[1] > p[2]  # the global order, inliers ignored
    for bad in ({"kind": "view", "a": 1, "c": 0, "b": {"sideways": 1}},
                {"kind": "view", "a": 1, "c": 0, "b": {"cross": -1}},
                {"kind": "view", "a": -1, "c": 0, "b": {}},
                {"kind": "view", "b": {}}):
        with pytest.raises(ValueError):
            LocalMatch(fusion=bad)


def test_fit_local_fits_on_the_runs_validation_whales_and_the_bundle_carries_it(smoke_run, tmp_path, capsys,
                                                                                  monkeypatch):
    import json
    import shutil
    import zipfile

    from omegaconf import OmegaConf

    from submission.build import build
    from tools import fit_local

    from core.training.runs import RunError, run_config
    from submission.build import BuildError

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("checkpoint"))
    asked = (run / "config.yaml").read_text()
    assert fit_local.main([str(run), "--shortlist", "25", "--max-side", "256"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((run / "postprocess_fit.json").read_text())
    step = report["steps"][0]
    assert step["name"] == "local_match" and 0 < step["true_pairs"] < step["pairs"] and "validation mAP: global" in printed
    fusion = step["options"]["fusion"]
    # the default recipe's fusion (fit_kind: view), as the runner fits it after training
    assert fusion["kind"] == "view" and fusion["a"] >= 0 and min(fusion["b"].values()) >= 0
    assert report["validation_before"]["mAP"] > 0
    assert (run / "config.yaml").read_text() == asked  # what was asked stays; what was fitted is in fitted.yaml
    chain = OmegaConf.to_container(run_config(run).postprocess)
    names = [s["name"] for s in chain]
    assert names[names.index("knn") + 1] == "local_match" and chain[names.index("knn")]["top_k"] == 25
    assert chain[names.index("local_match")]["fusion"] == fusion
    assert chain[names.index("local_match")]["top_k"] == 20  # the rows a query gets stay as before
    import core.retrieval

    built, build_steps = [], core.retrieval.build_steps
    monkeypatch.setattr(core.retrieval, "build_steps", lambda *a, **k: built.append(1) or build_steps(*a, **k))
    assert fit_local.main([str(run), "--shortlist", "25", "--max-side", "256"]) == 0  # again: one step, not two
    assert len(built) == 1  # the chain is built once per fit: the fitted step ranks again itself
    chain = OmegaConf.to_container(run_config(run).postprocess)
    assert [s["name"] for s in chain].count("local_match") == 1 and (run / "config.yaml").read_text() == asked
    build([run], tmp_path / "s.zip")
    manifest = json.loads(zipfile.ZipFile(tmp_path / "s.zip").read("manifest.json"))
    assert manifest["postprocess"][-1]["name"] == "local_match" and manifest["postprocess"][-1]["fusion"] == fusion
    (run / "config.yaml").write_text(asked.replace("top_k: 20", "top_k: 21"))  # edited after its fit: refused
    with pytest.raises(RunError, match="changed after its postprocess was fitted"):
        run_config(run)
    with pytest.raises(BuildError, match="fitted.yaml"):
        build([run], tmp_path / "t.zip")
    (run / "config.yaml").write_text(asked)
    (run / "fitted.yaml").unlink()  # the chain as asked has nothing to fit: no report
    from core.training.fit import fit_postprocess

    assert fit_postprocess(run) is None


def test_the_runner_fits_local_match_on_its_validation_whales(fused_run):
    """A config that names ``local_match`` (``fused_run``: the smoke run's weights, ``eval_only``, the chain knn then
    local_match): ``core/run.py`` fits it after evaluating and writes the fusion to the run's ``fitted.yaml`` beside
    its config, which the bundle then carries."""
    import json

    from omegaconf import OmegaConf

    from core.training.runs import run_config

    asked = OmegaConf.to_container(OmegaConf.load(fused_run / "config.yaml").postprocess)
    assert [s["name"] for s in asked] == ["knn", "local_match"] and "fusion" not in asked[1]  # config.yaml: as asked
    chain = OmegaConf.to_container(run_config(fused_run).postprocess)
    assert [s["name"] for s in chain] == ["knn", "local_match"] and set(chain[1]["fusion"]) == {"a", "b", "c"}
    report = json.loads((fused_run / "postprocess_fit.json").read_text())
    assert report["steps"][0]["options"]["fusion"] == chain[1]["fusion"] and report["validation_before"]["mAP"] > 0


@pytest.mark.parametrize("detector", ["orb"])
def test_the_binary_detectors_match_by_hamming_distance(photos, detector):
    step = LocalMatch(detector=detector)
    q = step.features(photos["a"])
    assert q[1].dtype == np.uint8 and len(q[0]) > 50
    same, other = step.inliers(q, step.features(photos["a_moved"])), step.inliers(q, step.features(photos["b"]))
    assert same > 3 * max(other, 5), (same, other)


def test_many_threads_extracting_one_photo_into_the_disk_cache(photos, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    steps = [LocalMatch(cache_dir=str(tmp_path / "cache")) for _ in range(8)]  # separate memory caches, one disk
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda s: s.features(photos["a"]), steps))
    assert all(np.array_equal(g[0], got[0][0]) for g in got)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1 and not list((tmp_path / "cache").glob("*.tmp.npz"))


def test_the_catalogue_takes_the_step_from_the_bundle_it_opened(command_bundles, tmp_path):
    """Evidence for a catalogue gets ``local_match`` from the bundle it was given when the bundle carries it (the
    class defined in the bundle's own unpacked module), and this installation's step from a global-only bundle."""
    from catalogue.deciding.local import Evidence
    from core.contracts import LocalMatching

    fused = Evidence(tmp_path / "c.sqlite", bundle=command_bundles["fused"])
    assert fused.source == "the bundle fused.zip" and isinstance(fused.step, LocalMatching)
    made = type(fused.step).__init__.__code__.co_filename  # where the class was compiled from: the bundle's folder
    assert "whaleid_bundle_" in made and type(fused.step) is not LocalMatch, made
    plain = Evidence(tmp_path / "c.sqlite", bundle=command_bundles["global"])
    assert plain.source == "this installation's plugins" and type(plain.step) is LocalMatch
    assert plain.options == fused.options  # one source of defaults, whichever copy of the step
