"""What the tests share that is not a fixture: the repository's root, the smoke config, running core/run.py as a
user does, the GPU recipes shrunk to CPU, the 2022 runtime twin, and comparisons of rankings and metrics.
``conftest.py`` holds the fixtures and imports these; tests import them from here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


SMOKE = ["--config", str(ROOT / "configs" / "smoke.yaml")]


def run_core(args: list[str], launcher: list[str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``core/run.py`` as a user would: a script in a fresh process (optionally under accelerate launch)."""
    cmd = (launcher or [sys.executable]) + [str(ROOT / "core" / "run.py")] + args
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def shrunk_gpu_recipe(config: Path, data_root: Path, out: Path) -> list[str]:
    """Arguments that run a GPU recipe config as one CPU step on tiny data with random weights."""
    return ["--config", str(config), f"data.root={data_root}", f"output_dir={out}", "data.image_size=[64,64]",
            "backbone.pretrained=false", "train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=4",
            "train.mixed_precision=no", "data.num_workers=0", "data.num_folds=3", "infer.batch_size=16"]


RECIPES = ("seed_3rd_place/convnext_large", "seed_3rd_place/tf_efficientnet_b5_ns", "seed_3rd_place/tf_efficientnet_b7_ns",
           "winners/1st/efficientnetv2_rw_m", "winners/1st/tf_efficientnet_b5_ns", "winners/2nd/tf_efficientnet_b3_ns",
           "winners/2nd/tf_efficientnet_b5_ns", "winners/4th/tf_efficientnet_b5_ns_416", "winners/4th/tf_efficientnet_b7_ns_256")


def runtime_twin():
    """The 2022 runtime twin's interpreter, built here when a Python 3.9 is found and ``make test`` has not built
    it; None (the caller skips) when there is no Python 3.9, except under CI=true, where that fails the run."""
    from submission.runtime import INSTALL_HINT, build_twin, find_python, twin_python

    python = twin_python()
    if python is None and find_python():
        python = build_twin()
    if python is None and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no 2022 runtime twin: {INSTALL_HINT}")
    return python


def top_lists(csv: Path, k: int = 20) -> dict:
    """query id -> its first ``k`` (database image id, score) rows, in file order."""
    import pandas as pd

    frame = pd.read_csv(csv, dtype={"query_id": str, "database_image_id": str})
    return {q: list(zip(g["database_image_id"], g["score"].round(6)))[:k] for q, g in frame.groupby("query_id", sort=False)}


_LOSSLESS: dict = {}


def lossless_copy(survey: Path) -> Path:
    """``survey``'s test set and labels with every photo re-saved as PNG (made once per session). JPEG decoders
    differ between Pillow releases (the 2022 runtime's 8.2 and today's disagree on about 4% of pixels, by up
    to 9 levels), so comparing the twin with this venv on PNGs tests the bundle's code, not libjpeg."""
    import shutil
    import tempfile

    import pandas as pd
    from PIL import Image

    if survey not in _LOSSLESS:
        out = Path(tempfile.mkdtemp(prefix="lossless_")) / survey.name
        shutil.copytree(survey / "test", out / "test", ignore=shutil.ignore_patterns("images"))
        shutil.copy(survey / "test_labels.csv", out / "test_labels.csv")
        meta = pd.read_csv(survey / "test" / "metadata.csv", dtype=str)
        (out / "test" / "images").mkdir()
        for i, rel in enumerate(meta["path"]):
            png = Path(rel).with_suffix(".png")
            Image.open(survey / "test" / rel).convert("RGB").save(out / "test" / png)
            meta.loc[i, "path"] = str(png)
        meta.to_csv(out / "test" / "metadata.csv", index=False)
        _LOSSLESS[survey] = out
    return _LOSSLESS[survey]


def first_photos(survey: Path, n: int) -> Path:
    """A copy of ``survey``'s test set and labels cut to its first ``n`` photos, in the competition layout: each
    scenario's queries and database keep the photos left, and a scenario left without either is dropped."""
    import tempfile

    import pandas as pd

    out = Path(tempfile.mkdtemp(prefix="first_photos_")) / survey.name
    (out / "test" / "queries").mkdir(parents=True)
    (out / "test" / "databases").mkdir()
    meta = pd.read_csv(survey / "test" / "metadata.csv", dtype=str).head(n)
    meta.to_csv(out / "test" / "metadata.csv", index=False)
    kept = set(meta["image_id"])
    for rel in meta["path"]:
        (out / "test" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(survey / "test" / rel, out / "test" / rel)
    scenarios, query_ids = [], set()
    for _, row in pd.read_csv(survey / "test" / "query_scenarios.csv", dtype=str).iterrows():
        queries = pd.read_csv(survey / "test" / row["queries_path"], dtype=str)
        database = pd.read_csv(survey / "test" / row["database_path"], dtype=str)
        queries = queries[queries["query_image_id"].isin(kept)]
        database = database[database["database_image_id"].isin(kept)]
        if len(queries) and len(database):
            queries.to_csv(out / "test" / row["queries_path"], index=False)
            database.to_csv(out / "test" / row["database_path"], index=False)
            scenarios.append(row)
            query_ids |= set(queries["query_id"])
    assert scenarios, f"no scenario of {survey} keeps a query and a database in its first {n} photos"
    pd.DataFrame(scenarios).to_csv(out / "test" / "query_scenarios.csv", index=False)
    labels = pd.read_csv(survey / "test_labels.csv", dtype=str)
    labels[labels["query_id"].isin(query_ids) & labels["database_image_id"].isin(kept)].to_csv(
        out / "test_labels.csv", index=False)
    return out


TIED = 2e-5  # scores (0.49 x cosine) closer than this: float32 arithmetic of two torch releases can swap them


def same_ranking(a: list, b: list, tied: float = TIED) -> bool:
    """Two top-k lists of (image id, score) are the same ranking: the same images in the same order, except that
    images whose scores are within ``tied`` of each other (in both lists) may swap, and an image at the cut-off
    may be replaced by one tied with it."""
    sa, sb = dict(a), dict(b)
    ra, rb = {d: i for i, (d, _) in enumerate(a)}, {d: i for i, (d, _) in enumerate(b)}
    if len(a) != len(b):
        return False
    for mine, other in ((a, b), (b, a)):  # an image only one list has must tie with the other list's last one
        if any(d not in dict(other) and abs(s - other[-1][1]) > tied for d, s in mine):
            return False
    common = [d for d, _ in a if d in sb]
    for i, x in enumerate(common):
        for y in common[i + 1:]:
            if (ra[x] < ra[y]) != (rb[x] < rb[y]) and (abs(sa[x] - sa[y]) > tied or abs(sb[x] - sb[y]) > tied):
                return False
    return True


def twin_embeddings(zip_path: Path, survey: Path, runtime: str = "2022") -> list:
    """Per-model embeddings of ``survey``'s test photos (as PNGs) saved by ``main.py`` run in the twin
    (``submission.check --save-embeddings``), after checking that run was clean and answered every query."""
    import tempfile

    import numpy as np

    from submission.check import check

    survey = lossless_copy(survey)
    root = Path(tempfile.mkdtemp(prefix="embed_"))
    twin = check(zip_path, survey / "test", survey / "test_labels.csv", runtime=runtime, save_embeddings=root / "twin.npz")
    assert twin["problems"] == [] and twin["format"] == "valid" and twin["queries_missing"] == 0, twin
    assert twin["runtime"]["packages"]["timm"] == "0.5.4" or runtime != "2022"
    with np.load(root / "twin.npz", allow_pickle=False) as saved:
        assert saved["ok"].all()
        out = [saved[k] for k in sorted((k for k in saved.files if k.startswith("model")), key=lambda k: int(k[5:]))]
    shutil.rmtree(root)
    return out


def run_here(zip_path: Path, survey: Path) -> dict:
    """The bundle run in this process with this venv's packages: what its ``main.py`` calls
    (``core.inference.run``) on the unzipped bundle, scored as ``submission.check`` scores. In-process, because
    importing today's torch and timm costs a fresh interpreter about 7 s; a plugin package must be importable."""
    import tempfile
    import zipfile

    import pandas as pd

    from core.metric import score_scenarios
    from core.inference import run
    from core.scenarios import read_scenarios

    root = Path(tempfile.mkdtemp(prefix="here_"))
    zipfile.ZipFile(zip_path).extractall(root)
    csv = root / "submission.csv"
    assert run(root, survey / "test", csv, num_workers=0)["status"] == "ok"
    for entry in root.iterdir():  # the unpacked bundle (its weights) goes; the submission file is kept
        if entry != csv:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    truth = pd.read_csv(survey / "test_labels.csv", dtype=str)
    predictions = pd.read_csv(csv, dtype={"query_id": str, "database_image_id": str})
    mAP = score_scenarios(predictions, read_scenarios(survey / "test"), truth)["mAP"]
    return {"mAP": round(mAP, 4), "submission_csv": str(csv)}


def assert_same_in_twin(zip_path: Path, survey: Path, here=None) -> dict | None:
    """Run ``zip_path`` in the 2022 runtime twin and in this venv on ``survey``'s test set (as PNGs,
    ``lossless_copy``): both clean, mAP within 0.002, and identical top-20 lists for at least 99% of queries.
    ``here``: a callable giving this venv's result on the PNG survey (default ``run_here``). Returns the twin's
    result, or None when there is no twin (see ``runtime_twin``)."""
    from submission.check import check

    if runtime_twin() is None:
        return None
    survey = lossless_copy(survey)
    labels = survey / "test_labels.csv"
    twin = check(zip_path, survey / "test", labels, keep=True, runtime="2022")
    assert twin["problems"] == [] and twin["format"] == "valid", twin
    assert twin["runtime"]["packages"]["torch"].startswith("1.8") and twin["runtime"]["python_version"].startswith("3.9")
    here = (here or run_here)(zip_path, survey)
    assert abs(twin["mAP"] - here["mAP"]) <= 0.002, (twin["mAP"], here["mAP"])
    a, b = top_lists(Path(twin["submission_csv"])), top_lists(Path(here["submission_csv"]))
    assert set(a) == set(b)
    differ = [q for q in a if not same_ranking(a[q], b[q])]
    assert len(differ) <= 0.01 * len(a), (f"{len(differ)} of {len(a)} queries have other top-20 lists in the twin than "
                                          f"here; the first, {differ[0]}: twin {a[differ[0]]}, here {b[differ[0]]}")
    return twin


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def assert_metrics_recomputed(run: Path) -> dict:
    """A run's metrics.json agrees with what it was computed from: mAP is the mean of per_query.csv's APs (the
    competition averages over queries), each scenario's mAP the mean over its queries, the kept epoch the best
    of history.jsonl, and the random baseline below 1. Returns the metrics."""
    import pandas as pd

    metrics = read_json(run / "metrics.json")
    per_query = pd.read_csv(run / "per_query.csv")
    assert len(per_query) > 0 and per_query.ap.between(0, 1).all()
    assert abs(per_query.ap.mean() - metrics["mAP"]) < 1e-9, (per_query.ap.mean(), metrics["mAP"])
    for name, value in metrics["scenarios"].items():
        assert abs(per_query[per_query.scenario == name].ap.mean() - value) < 1e-9, name
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    assert metrics["mAP"] == max(h["mAP"] for h in history) and metrics["epoch"] in [h["epoch"] for h in history]
    return metrics
