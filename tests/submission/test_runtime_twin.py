"""The 2022 runtime: one list of what it has, weights and mixed precision that work on its torch 1.8, a build
that refuses newer Python, and bundles that run in its twin (Python 3.9, torch 1.8, timm 0.5.4) as they do here.

Bundles built elsewhere in the suite run in the twin where they are built (tests/helpers.py,
``assert_same_in_twin``): the demo-shaped bundle, the CV bundle, the example plugin package's bundle. This
module adds one bundle per postprocess step and per neck, a ``tools.ensemble`` bundle with viewpoint
weights, and every seed and winners config."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from tests.helpers import RECIPES, SMOKE, assert_same_in_twin, run_core, runtime_twin


def test_one_list_of_what_the_runtime_has(tmp_path):
    from submission import build, check
    from submission.runtime import DISTRIBUTIONS, MODULES, RUNTIME, parse

    assert RUNTIME.python == "3.9" and RUNTIME.pins["torch"] == "1.8.0" and RUNTIME.pins["timm"] == "0.5.4"
    assert {"torch", "timm", "PIL", "faiss", "pluggy", "omegaconf", "sklearn", "cv2"} <= MODULES
    assert "safetensors" not in MODULES and "safetensors" not in DISTRIBUTIONS  # it did not exist in 2022
    assert "matplotlib" in RUNTIME.pins and "matplotlib" not in MODULES  # transitive: installed, not offered
    assert check.RUNTIME_MODULES is MODULES
    assert not hasattr(build, "RUNTIME_DISTRIBUTIONS") and not hasattr(build, "CORE_INFERENCE")
    bad = tmp_path / "r.txt"
    bad.write_text("# python: 3.9\ntorch>=1.8\n")
    with pytest.raises(ValueError, match="line 2: expected name==version"):
        parse(bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                   torch.int32, torch.uint8, torch.bool])
def test_weights_reader_equals_the_safetensors_package(tmp_path, dtype):
    from safetensors.torch import load_file, save_file

    from core.weights import read_safetensors

    torch.manual_seed(0)
    tensors = {"a": (torch.randn(3, 5) * 10).to(dtype), "scalar": torch.tensor(3).to(dtype),
               "empty": torch.zeros(0, 4).to(dtype)}
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"format": "pt"})
    ours, theirs = read_safetensors(tmp_path / "w.safetensors"), load_file(str(tmp_path / "w.safetensors"))
    assert set(ours) == set(theirs)
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape and torch.equal(ours[k], theirs[k])


def test_damaged_weights_name_the_file_and_tensor(tmp_path):
    from safetensors.torch import save_file

    from core.weights import WeightsError, read_safetensors

    save_file({"layer.weight": torch.ones(4, 4)}, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(WeightsError, match=r"cut.safetensors: tensor 'layer.weight' .* damaged"):
        read_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not weights at all")
    with pytest.raises(WeightsError, match="junk.safetensors: header length"):
        read_safetensors(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        read_safetensors(tmp_path / "missing.safetensors")


def test_autocast_uses_what_the_installed_torch_has(monkeypatch):
    import contextlib

    from core import compat

    assert isinstance(compat.autocast("cpu", torch.bfloat16), torch.autocast)
    monkeypatch.delattr(torch, "autocast")  # torch 1.8: only torch.cuda.amp.autocast, CUDA float16
    assert isinstance(compat.autocast("cuda", torch.float16), torch.cuda.amp.autocast)
    assert isinstance(compat.autocast_off("cuda"), torch.cuda.amp.autocast)
    assert isinstance(compat.autocast("cpu", torch.bfloat16), contextlib.nullcontext)
    assert isinstance(compat.autocast("cuda", torch.bfloat16), contextlib.nullcontext)
    with compat.autocast_off("cpu"):
        assert torch.ones(2).dtype == torch.float32


@pytest.mark.parametrize("real_python", [True, False], ids=["python3.9", "ast-3.9-grammar"])
def test_build_stops_on_syntax_newer_than_the_runtimes_python(real_python, monkeypatch):
    import submission.runtime as runtime
    from submission.build import BuildError, check_python_version

    if real_python:
        twin_or_skip()  # a Python 3.9 is there whenever the twin is (under CI=true a missing one fails)
    if not real_python:
        monkeypatch.setattr(runtime, "twin_python", lambda *a: None)
        monkeypatch.setattr(runtime, "find_python", lambda *a: None)
    fine = {"plugins/ok.py": b"from __future__ import annotations\ndef f(x: int | None) -> list[int]:\n    return [x]\n"}
    check_python_version(fine)  # annotations are not evaluated: fine on 3.9
    newer = dict(fine, **{"plugins/new.py": b"x = 1\n\nmatch x:\n    case 1:\n        pass\n"})
    with pytest.raises(BuildError, match=r"plugins/new.py line [35]: .*Python 3.9"):
        check_python_version(newer)


def test_bundle_core_is_what_inference_imports(smoke_run, tmp_path):
    """core/ goes in by the imports of main.py and the plugins, and no training module can reach it."""
    from submission.build import build

    build([smoke_run], tmp_path / "s.zip")
    names = {n for n in zipfile.ZipFile(tmp_path / "s.zip").namelist() if n.startswith("core/")}
    assert {"core/inference.py", "core/model.py", "core/weights.py", "core/compat.py", "core/retrieval.py"} <= names
    assert "core/run.py" not in names and not any(n.startswith("core/training/") for n in names)


def test_the_twin_has_the_runtimes_versions():
    from submission.runtime import RUNTIME, twin_versions

    twin_or_skip()
    versions = twin_versions(runtime_twin())
    assert versions["python"].startswith("3.9")
    assert {n: versions.get(n) for n in RUNTIME.pins} == RUNTIME.pins


# ---- bundles run in the twin as they run here -----------------------------------------------------

def twin_or_skip():
    if runtime_twin() is None:
        pytest.skip("no Python 3.9 here, so no runtime twin (make runtime-twin says what to install)")


def with_postprocess(run, out, chain):
    """A copy of ``run`` whose config ranks with ``chain``: the same weights, another postprocess chain."""
    from omegaconf import OmegaConf

    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoint", "oof.npz"))
    cfg = OmegaConf.load(out / "config.yaml")
    cfg.postprocess = chain
    OmegaConf.save(cfg, out / "config.yaml")
    return out


CHAINS = {
    "knn": [{"name": "knn"}],
    "database_augmentation": [{"name": "database_augmentation", "k": 2}, {"name": "knn"}],
    "query_expansion": [{"name": "query_expansion", "k": 2}, {"name": "knn"}],
    "db_anchor_rerank": [{"name": "db_anchor_rerank"}],
    "k_reciprocal": [{"name": "k_reciprocal", "k1": 5, "k2": 3}],
    # OpenCV 4.5.2 there, today's here: keypoints, matching and the fused ranking must agree
    "local_match": [{"name": "knn", "top_k": 30}, {"name": "local_match", "shortlist": 30, "workers": 1,
                                                   "fusion": {"a": 20.0, "b": 1.0, "c": -18.0}}],
}


@pytest.mark.parametrize("step", sorted(CHAINS))
def test_each_postprocess_step_runs_in_the_twin(step, smoke_run, tiny_survey, tmp_path):
    from submission.build import build

    twin_or_skip()
    build([with_postprocess(smoke_run, tmp_path / "run", CHAINS[step])], tmp_path / "s.zip")
    manifest = json.loads(zipfile.ZipFile(tmp_path / "s.zip").read("manifest.json"))
    assert [s["name"] for s in manifest["postprocess"]] == [s["name"] for s in CHAINS[step]]
    assert assert_same_in_twin(tmp_path / "s.zip", tiny_survey)["mAP"] > 0


@pytest.mark.parametrize("neck", ["gem_bn", "dolg"])  # multi_gem: the demo recipe's bundle (test_submission.py)
def test_each_neck_runs_in_the_twin(neck, smoke_run, tiny_survey, tmp_path):
    from submission.build import build

    twin_or_skip()
    run = smoke_run
    if neck == "dolg":
        run = tmp_path / "dolg"
        run_core(SMOKE + [f"data.root={tiny_survey / 'train'}", f"output_dir={run}", "train.epochs=1",
                          "backbone.mode=stages", "backbone.out_indices=[3,4]", "neck.name=dolg",
                          "neck.embedding_size=64", "neck.dim=32"])
    build([run], tmp_path / "s.zip")
    assert f"plugins.necks.{neck}" in json.loads(zipfile.ZipFile(tmp_path / "s.zip").read("manifest.json"))["plugins"]
    assert_same_in_twin(tmp_path / "s.zip", tiny_survey)


def test_an_ensemble_file_with_viewpoint_weights_runs_in_the_twin(smoke_run, tiny_survey, tmp_path):
    from safetensors.torch import load_file, save_file

    from submission.build import main as build_main

    twin_or_skip()
    other = tmp_path / "other"
    shutil.copytree(smoke_run, other, ignore=shutil.ignore_patterns("checkpoint"))
    torch.manual_seed(0)
    weights = load_file(other / "best.safetensors")
    save_file({k: (v + 0.5 * torch.randn_like(v) * v.std() if v.is_floating_point() and v.numel() > 1 else v)
               for k, v in weights.items()}, str(other / "best.safetensors"))
    spec = {"members": [{"run": str(smoke_run), "weight": 0.6}, {"run": str(other), "weight": 0.4}]}
    (tmp_path / "e.json").write_text(json.dumps(spec))
    build_main(["--ensemble", str(tmp_path / "e.json"), "--viewpoint-weights", '{"top_top": [1, 0]}',
                "--out", str(tmp_path / "s.zip")])
    manifest = json.loads(zipfile.ZipFile(tmp_path / "s.zip").read("manifest.json"))
    assert manifest["viewpoint_weights"] == {"top_top": [1.0, 0.0]} and len(manifest["models"]) == 2
    assert_same_in_twin(tmp_path / "s.zip", tiny_survey)


def test_every_gpu_recipe_packs_and_runs_in_the_twin(recipe_run, tiny_survey, tmp_path):
    """Every seed and winners config at 64 px after one CPU step, packed together into one bundle (its models run
    one after another, as an ensemble's do): timm 0.5.4 builds every model, the trained weights load there, and
    main.py answers every query with finite embeddings of each model's size.

    Their embeddings are not compared with this venv's: after one step these deep models are numerically chaotic
    (running statistics still at their initial values, activations growing to 1e4-1e5 over the blocks), so the
    float32 rounding that differs between torch 1.8 and today's (1e-7 in the first block) grows to differences
    of 1e-3 to 0.1 by the last, and they embed every photo within 1e-5 cosine of every other, so rankings are
    noise too. The trained bundles above are where the twin must rank as here."""
    import numpy as np

    from submission.build import build
    from tests.helpers import first_photos, twin_embeddings

    twin_or_skip()
    runs = [recipe_run(config) for config in RECIPES]
    info = build(runs, tmp_path / "s.zip")
    assert info["models"] == len(RECIPES)
    manifest = json.loads(zipfile.ZipFile(tmp_path / "s.zip").read("manifest.json"))
    assert {"plugins.necks.dolg", "plugins.necks.multi_gem", "plugins.necks.gem_bn"} <= set(manifest["plugins"])
    # a third of the test photos: ConvNeXt-L alone embeds about 2 photos a second with torch 1.8 on one CPU thread
    few = first_photos(tiny_survey, 10)
    embeddings = twin_embeddings(tmp_path / "s.zip", few)
    photos = sum(1 for _ in open(few / "test" / "metadata.csv")) - 1
    assert photos == 10
    assert len(embeddings) == len(RECIPES)
    for config, emb in zip(RECIPES, embeddings):
        assert emb.shape[0] == photos and emb.shape[1] >= 64 and np.isfinite(emb).all(), (config, emb.shape)
        assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4), config  # unit rows: none collapsed to zero
    (tmp_path / "s.zip").unlink()  # about 2 GB


def test_the_ranking_comparison_allows_only_numerical_ties():
    from tests.helpers import same_ranking

    a = [("x", 0.97), ("y", 0.96), ("z", 0.95)]
    assert same_ranking(a, list(a))
    assert not same_ranking(a, [("y", 0.96), ("x", 0.97), ("z", 0.95)])  # a real swap
    assert same_ranking([("x", 0.970004), ("y", 0.970001), ("z", 0.95)], [("y", 0.970002), ("x", 0.970001), ("z", 0.95)])
    assert not same_ranking(a, [("x", 0.97), ("y", 0.96), ("w", 0.94)])  # another image at the cut-off
    assert same_ranking(a, [("x", 0.97), ("y", 0.96), ("w", 0.950001)])  # one tied with the cut-off
