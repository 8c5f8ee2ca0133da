"""The second renderer (tools.outline_survey): the competition layout, determinism, identity in the pixels,
and no code shared with tools.synthesize."""

import ast
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tools import outline_survey as outline


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("outline") / "calm"
    outline.survey("tiny", root, "calm", seed=0, workers=2)
    return root


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_layout_scenarios_and_unseen_test_whales(survey):
    train = pd.read_csv(survey / "train" / "metadata.csv")
    test = pd.read_csv(survey / "test" / "metadata.csv")
    assert list(train.columns) == ["image_id", "path", "height", "width", "viewpoint", "date", "timestamp",
                                   "whale_id", "encounter_id"]
    assert list(test.columns) == ["image_id", "path", "height", "width", "viewpoint", "date"]
    assert train.whale_id.nunique() == outline.PRESETS["tiny"][0]
    assert all((survey / "train" / p).is_file() for p in train.path) and all((survey / "test" / p).is_file() for p in test.path)
    labels = pd.read_csv(survey / "test_labels.csv")
    scenarios = pd.read_csv(survey / "test" / "query_scenarios.csv")
    assert len(scenarios) >= 3 and len(labels) > 0
    test_ids = set(test.image_id)
    assert set(labels.database_image_id) <= test_ids and not set(train.image_id) & test_ids
    assert set(train.viewpoint) == {"top", "left", "right"}  # the competition's viewpoint names


def test_same_seed_same_bytes(survey, tmp_path):
    outline.survey("tiny", tmp_path / "again", "calm", seed=0, workers=1)
    assert digest(tmp_path / "again") == digest(survey)


def test_identity_is_in_the_pixels():
    """Two photos of one whale (other encounters) are closer than photos of two whales, on average."""
    look = outline.VARIANTS["calm"]
    enc = {"sun": 1.0, "tint": (0.6, 0.9, 0.95), "balance": (1, 1, 1), "heading": 0.0, "submerge": 0.0,
           "flank": "left", "scale": 0.5}

    def photo(number, k):
        img = outline.render(outline.make_whale(0, number, look), "top", 2017, enc, outline.rng_for("t", number, k), look)
        return np.asarray(img.convert("L").resize((48, 112)), np.float32)

    same = np.mean([np.abs(photo(n, 0) - photo(n, 1)).mean() for n in range(6)])
    other = np.mean([np.abs(photo(n, 0) - photo(n + 1, 1)).mean() for n in range(6)])
    assert same < other * 0.8


def test_shares_no_code_with_the_first_renderer():
    tree = ast.parse(Path(outline.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any("synthesize" in m for m in imported)


def test_variants_differ_and_unknown_is_refused(tmp_path):
    assert outline.VARIANTS["choppy"] != outline.VARIANTS["calm"]
    with pytest.raises(SystemExit):
        outline.survey("tiny", tmp_path / "x", "no_such_look")


def test_the_runner_reads_it(survey):
    """What bench_quality trains on: the runner's own reader accepts every row (viewpoints, dates, ids)."""
    from core.data import read_metadata

    train = read_metadata(survey / "train", require_identity=True)
    assert len(train) == len(pd.read_csv(survey / "train" / "metadata.csv"))
    assert set(read_metadata(survey / "test", require_identity=False).viewpoint) <= {"top", "left", "right"}
