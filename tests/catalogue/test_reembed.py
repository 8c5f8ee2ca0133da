"""A catalogue moved to a new model (``catalogue reembed``): survives kill -9, resumes, keeps every decision, and
then identifies as a catalogue built fresh with that model; identify through the approximate index ranks whales
as exact search does; embedding refuses a device that is not there."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def two_bundles(smoke_run, tmp_path_factory):
    """The smoke run's bundle, and a second model: the same run with every weight moved by noise."""
    import torch
    from safetensors.torch import load_file, save_file

    from submission.build import build

    tmp = tmp_path_factory.mktemp("bundles")
    build([smoke_run], tmp / "a.zip")
    other = tmp / "other"
    shutil.copytree(smoke_run, other, ignore=shutil.ignore_patterns("checkpoint", "last.safetensors"))
    weights = load_file(str(other / "best.safetensors"))
    g = torch.Generator().manual_seed(1)
    moved = {k: (v + 0.1 * v.float().std().nan_to_num(0) * torch.randn(v.shape, generator=g)).contiguous()
             if v.is_floating_point() and v.numel() > 1 else v for k, v in weights.items()}
    save_file(moved, str(other / "best.safetensors"))
    build([other], tmp / "b.zip")
    return tmp / "a.zip", tmp / "b.zip"


def identify(main, bundle, db, train, out, *extra):
    assert main(["identify", "--bundle", str(bundle), "--db", str(db), "--data", str(train), "--from", "2019-01-01",
                 "--out", str(out), "--workers", "0", "--device", "cpu", *extra]) == 0
    return pd.read_csv(out, dtype={"image_id": str}).set_index("image_id").sort_index()


def same_identification(a: pd.DataFrame, b: pd.DataFrame, tol: float = 2e-4) -> None:
    assert list(a.index) == list(b.index)
    assert list(a.decision) == list(b.decision)
    assert np.allclose(a.score, b.score, atol=tol)
    for x, y in zip(a.candidates, b.candidates):
        x, y = json.loads(x), json.loads(y)
        assert [c["whale_id"] for c in x] == [c["whale_id"] for c in y] or \
            np.allclose([c["score"] for c in x], [c["score"] for c in y], atol=tol)  # only tied whales may swap
        assert np.allclose([c["score"] for c in x], [c["score"] for c in y], atol=tol)


def test_reembed_survives_kill_9_resumes_keeps_decisions_and_equals_a_fresh_build(two_bundles, tiny_survey, tmp_path,
                                                                                    capsys):
    from catalogue.cli import main
    from catalogue.embedding.embed import bundle_hash
    from catalogue.records.store import Catalogue

    a, b = two_bundles
    train, db, fresh = tiny_survey / "train", tmp_path / "c.sqlite", tmp_path / "fresh.sqlite"
    for bundle, path in ((a, db), (b, fresh)):
        assert main(["catalogue", "build", "--bundle", str(bundle), "--data", str(train), "--db", str(path),
                     "--before", "2019-01-01", "--workers", "0", "--no-keypoints", "--device", "cpu"]) == 0
    identify(main, a, db, train, tmp_path / "a.csv", "--index-above", "1")  # proposals of model a; its index
    from catalogue.embedding.index import index_folder

    old_index = index_folder(db, bundle_hash(a))
    assert old_index.is_dir()
    cat = Catalogue.open(db)
    first = cat.proposals()[0]
    cat.decide("ana", "accept", first["image_id"], first["candidates"][0]["whale_id"], expect_last=None)
    decisions, state = cat.decisions(), cat.state()
    cat.close()

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "catalogue.cli", "catalogue", "reembed", "--db", str(db), "--bundle",
                             str(b), "--chunk", "3", "--workers", "0", "--device", "cpu"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staged, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                staged = conn.execute("SELECT COUNT(*) FROM reembed").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not there yet, or the file is busy
            staged = 0
        if staged >= 6:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.read()[-2000:])

    # killed mid-way: the catalogue is the old one, whole, and still works with the old model
    cat = Catalogue.open(db, model_hash=bundle_hash(a))
    assert cat.decisions() == decisions
    cat.close()
    assert main(["catalogue", "check", "--db", str(db)]) == 0 and old_index.is_dir()
    capsys.readouterr()

    assert main(["catalogue", "reembed", "--db", str(db), "--bundle", str(b), "--workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "resumed" in printed and "done" in printed
    cat = Catalogue.open(db, model_hash=bundle_hash(b))
    assert cat.decisions() == decisions and cat.state()["identity"] == state["identity"]
    assert "reembed" not in {r[0] for r in cat.conn.execute("SELECT name FROM sqlite_master")}
    assert not old_index.exists()  # the old model's index went with it
    emb = {r[0]: np.frombuffer(r[1], np.float32) for r in cat.conn.execute("SELECT image_id, embedding FROM proposals")}
    cat.close()
    from catalogue.embedding.embed import embed_files

    again, ok = embed_files(b, [first["path"]], 0, "cpu")  # a proposal's embedding is model b's now
    assert ok.all() and np.allclose(emb[first["image_id"]], again[0], atol=1e-4)
    assert main(["catalogue", "check", "--db", str(db)]) == 0
    assert main(["catalogue", "reembed", "--db", str(db), "--bundle", str(b)]) == 0
    assert "nothing to do" in capsys.readouterr().out

    same_identification(identify(main, b, db, train, tmp_path / "moved.csv"),
                        identify(main, b, fresh, train, tmp_path / "fresh.csv"))


def test_identify_through_the_index_ranks_whales_as_exact_search(two_bundles, tiny_survey, tmp_path, capsys):
    from catalogue.cli import main
    from catalogue.embedding.embed import bundle_hash
    from catalogue.embedding.index import index_folder

    a, _ = two_bundles
    train, db = tiny_survey / "train", tmp_path / "c.sqlite"
    assert main(["catalogue", "build", "--bundle", str(a), "--data", str(train), "--db", str(db), "--before",
                 "2019-01-01", "--workers", "0", "--no-keypoints"]) == 0
    exact = identify(main, a, db, train, tmp_path / "exact.csv", "--index-above", "-1")
    assert "approximate index" not in capsys.readouterr().out
    indexed = identify(main, a, db, train, tmp_path / "index.csv", "--index-above", "10")
    assert "approximate index" in capsys.readouterr().out
    same_identification(exact, indexed)
    folder = index_folder(db, bundle_hash(a))
    meta = json.loads((folder / "meta.json").read_text())
    photos = len(pd.read_csv(train / "metadata.csv").query("date < '2019-01-01'"))
    assert meta["rows"] == photos
    # photos added later reach the index (appended: the ids it holds are a prefix of the catalogue's)
    dates = pd.read_csv(train / "metadata.csv", dtype=str)["date"]
    cut = sorted(dates[dates >= "2019-01-01"])[len(dates[dates >= "2019-01-01"]) // 2]
    assert main(["catalogue", "build", "--bundle", str(a), "--data", str(train), "--db", str(db), "--before",
                 cut, "--workers", "0", "--no-keypoints"]) == 0
    identify(main, a, db, train, tmp_path / "index2.csv", "--index-above", "10")
    more = int((dates < cut).sum())
    assert json.loads((folder / "meta.json").read_text())["rows"] == more > photos


def test_several_devices_each_embed_a_share_and_the_shares_join_in_order(two_bundles, tiny_survey):
    """Several devices (GPUs on a CUDA machine; here two CPU entries, the same code path) give what one gives."""
    from catalogue.embedding.embed import embed_files

    meta = pd.read_csv(tiny_survey / "train" / "metadata.csv", dtype=str).head(21)
    files = [str(tiny_survey / "train" / p) for p in meta.path]
    one, ok1 = embed_files(two_bundles[0], files, 0, "cpu")
    two, ok2 = embed_files(two_bundles[0], files, 0, "cpu,cpu")
    assert ok1.all() and ok2.all() and one.shape == two.shape and np.allclose(one, two, atol=1e-5)


def test_embedding_refuses_a_device_that_is_not_there(capsys):
    import torch

    from catalogue.embedding.embed import resolve_device, resolve_devices

    assert [d.type for d in resolve_devices("cpu,cpu")] == ["cpu", "cpu"]
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu0"):
        with pytest.raises(ValueError, match="--device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
