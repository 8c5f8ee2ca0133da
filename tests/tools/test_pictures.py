"""Pictures: pair explanations, retrieval galleries and the run report."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from tests.tools.test_compare_ensemble import make_cv_member


class PatchModel(nn.Module):
    """A fixed 8x8-patch conv backbone and mean pooling: what each location contributes is local."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Conv2d(3, 32, 8, stride=8)
        self.neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.neck(self.backbone(x))


def test_pair_heat_peaks_on_the_patch_both_photos_share():
    from tools.explain import pair_heatmaps

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 64, 64, generator=g) * 0.3, torch.randn(3, 64, 64, generator=g) * 0.3
    patch = torch.randn(3, 16, 16, generator=g) * 3
    a[:, 8:24, 40:56] = patch  # top right in one photo
    b[:, 40:56, 8:24] = patch  # bottom left in the other
    heat_a, heat_b, cosine = pair_heatmaps(PatchModel(), a, b)
    assert heat_a.shape == (64, 64) and 0 <= heat_a.min() and heat_a.max() == pytest.approx(1.0)
    ya, xa = np.unravel_index(heat_a.argmax(), heat_a.shape)
    yb, xb = np.unravel_index(heat_b.argmax(), heat_b.shape)
    assert 8 <= ya < 24 and 40 <= xa < 56 and 40 <= yb < 56 and 8 <= xb < 24
    assert heat_a[8:24, 40:56].mean() > 4 * heat_a.mean() and heat_b[40:56, 8:24].mean() > 4 * heat_b.mean()
    assert -1 <= cosine <= 1


def test_a_backbone_without_a_map_is_told_what_to_do():
    from tools.explain import ExplainError, pair_heatmaps

    model = nn.Module()
    model.backbone, model.neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Identity()
    model.forward = lambda x: model.neck(model.backbone(x))
    with pytest.raises(ExplainError, match="explain_pair"):
        pair_heatmaps(model, torch.randn(3, 8, 8), torch.randn(3, 8, 8))


def test_gallery_frames_follow_identities_and_report_the_first_true_rank(tmp_path):
    """Embeddings where whale w's photos sit near direction w, except one query placed among another whale's:
    its row shows red frames only and the rank where its own whale first appears."""
    from tools.report import gallery_html, gallery_rows

    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(8, 16))

    def emb(k, w, i):
        if (w, i) == (0, 0):  # the odd one: looks like whale 1
            return dirs[1] + 0.05 * rng.normal(size=16)
        return dirs[w] + 0.05 * rng.normal(size=16)

    run = make_cv_member(tmp_path, "m", emb, whales=8, per_whale=3, folds=1) / "fold0"
    rows = gallery_rows(run, queries_per_scenario=24, top_k=3)
    whale = lambda img: img.split("i")[0]  # noqa: E731  ids are f0w<w>i<i>
    for r in rows:
        assert all(hit == (whale(d) == whale(r["query"])) for d, _, hit in r["top"])
    odd = next(r for r in rows if r["query"] == "f0w0i0")
    assert not any(hit for _, _, hit in odd["top"]) and odd["first_true_rank"] > 3
    fine = next(r for r in rows if r["query"] == "f0w2i0")
    assert all(hit for _, _, hit in fine["top"][:2]) and fine["first_true_rank"] is None
    page = gallery_html([odd, fine], {}, rotate=False)
    rows_html = re.findall(r'<div class="gallery".*?</div>\s*(?=<div class="gallery"|$)', page, re.S)
    assert re.findall(r'class="thumb (\w+)"', rows_html[0]) == ["query", "miss", "miss", "miss"]
    assert f"first true match at rank {odd['first_true_rank']}" in rows_html[0]
    assert re.findall(r'class="thumb (\w+)"', rows_html[1])[:3] == ["query", "hit", "hit"]


def test_report_builds_from_the_smoke_run_self_contained(smoke_run, tmp_path):
    from tools.report import build_report

    info = build_report(smoke_run, tmp_path / "report.html", queries=2, top_k=4)
    page = (tmp_path / "report.html").read_text()
    for section in ("summary", "curves", "scenarios", "galleries", "explanations", "config"):
        assert f'<section id="{section}">' in page
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)  # nothing fetched, nothing beside it needed
    assert "http://" not in page and "https://" not in page
    assert info["galleries"] >= 2 and info["explanations"] >= 1
    assert page.count('class="thumb query"') == info["galleries"]
    for png in info["pngs"]:
        assert open(png, "rb").read(4) == b"\x89PNG"


def test_explain_cli_writes_a_pair_png(smoke_run, tmp_path):
    import pandas as pd

    from tools.explain import main

    split = pd.read_csv(smoke_run / "split.csv", dtype=str)
    val = split[split["role"] == "val"]
    q, d = val["image_id"].iloc[0], val["image_id"].iloc[1]
    out = tmp_path / "pair.png"
    assert main([str(smoke_run), "--query", q, "--db", d, "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as exc:
        main([str(smoke_run), "--query", "nope", "--db", d, "--out", str(out)])
    assert exc.value.code == 2


def test_report_renders_in_headless_chromium_without_errors(smoke_run, tmp_path):
    from tools.report import build_report
    from tools.report_check import check_dom, find_browser, render

    browser = find_browser()
    if browser is None:
        pytest.skip("Debian's chromium is not installed here (make report-check installs it)")
    build_report(smoke_run, tmp_path / "report.html", queries=1, top_k=3, explain=False)
    result = render(tmp_path / "report.html", tmp_path / "shot.png", 1000, 1400, browser)
    assert result["problems"] == [] and check_dom(result["dom"]) == []
    assert (tmp_path / "shot.png").read_bytes()[:4] == b"\x89PNG"
    # a broken page is caught: a missing image file is a failed resource load, a missing section is named
    (tmp_path / "broken.html").write_text('<html><body><section id="summary"><img src="missing.png"></section>'
                                          '<script>console.error("boom")</script></body></html>')
    broken = render(tmp_path / "broken.html", tmp_path / "broken.png", 600, 400, browser)
    assert any("missing.png" in p for p in broken["problems"]) and any("boom" in p for p in broken["problems"])
    assert "section 'galleries' missing" in " ".join(check_dom(broken["dom"]))


def test_zip_report_galleries_on_a_test_folder(smoke_run, tiny_survey, tmp_path):
    """A submission zip on a test folder: the page's mAP is the checker's, frames follow the labels, and
    without labels every frame is grey."""
    import pandas as pd

    from submission.build import build
    from submission.check import check
    from tools.report import build_zip_report

    zip_path = tmp_path / "s.zip"
    build([smoke_run], zip_path)
    labels = tiny_survey / "test_labels.csv"
    info = build_zip_report(zip_path, tiny_survey / "test", tmp_path / "r.html", labels, queries=2, top_k=4)
    page = (tmp_path / "r.html").read_text()
    assert f"mAP <b>{check(zip_path, tiny_survey / 'test', labels)['mAP']:.4f}</b>" in page
    truth = set(map(tuple, pd.read_csv(labels, dtype=str)[["query_id", "database_image_id"]].to_numpy()))
    for block in re.findall(r'<div class="gallery" data-query="([^"]+)">(.*?)(?=<div class="gallery"|</section>)', page, re.S):
        qid, cells = block
        for frame, db_id in re.findall(r'class="thumb (hit|miss)"><img src="[^"]+" alt="([^"]+)"', cells):
            assert (frame == "hit") == ((qid, db_id) in truth)
    assert info["galleries"] >= 2 and page.count('class="thumb hit"') + page.count('class="thumb miss"') > 0
    build_zip_report(zip_path, tiny_survey / "test", tmp_path / "r2.html", None, queries=2, top_k=4)
    plain = (tmp_path / "r2.html").read_text()
    assert 'class="thumb hit"' not in plain and 'class="thumb miss"' not in plain and 'class="thumb unlabelled"' in plain
