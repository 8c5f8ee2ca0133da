"""Plugins that ship: an installed plugin package (entry point named unlike its module, several modules,
package data) trains, packs into the submission zip and runs there with nothing installed; dependencies
are checked; the listing shows where each component came from; loading is safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ROOT, SMOKE, assert_same_in_twin

EXAMPLE = ROOT / "examples" / "whaleid-plugin-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example installed with pip, offline (no index, no build isolation), into its own folder."""
    import shutil

    target, src = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("src") / "example"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))  # pip writes build/
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, text=True, timeout=300)
    assert (target / "whaleid_example" / "defaults.json").is_file()
    return target


def env_with(site: Path | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site) if site else "", str(ROOT)) if p)
    return env


def py(args, site, check=True):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env_with(site), capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def test_listing_shows_builtins_and_the_installed_plugin_with_sources(installed):
    out = py(["-m", "core.plugins"], installed).stdout
    assert "belugas          plugins.datasets.belugas  [built-in]" in out
    assert "mean_max         whaleid_example  [entry point 'example' (whaleid-plugin-example)]" in out
    assert "normface         whaleid_example" in out
    assert "options: s=16.0\n" in out  # normface's options, less what the runner passes itself


def test_installed_and_listed_in_the_config_registers_once(installed):
    code = ("from core.plugins import build_registries; r = build_registries(['whaleid_example']); "
            "print(r['neck'].sources['mean_max'])")
    assert "config and entry point 'example'" in py(["-c", code], installed).stdout


def test_the_example_package_passes_its_own_tests(installed):
    py(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")], installed)


@pytest.fixture(scope="module")
def plugin_run(installed, tiny_survey, tmp_path_factory):
    out = tmp_path_factory.mktemp("plugrun") / "run"
    py([str(ROOT / "core" / "run.py")] + SMOKE + [
        f"data.root={tiny_survey / 'train'}", f"output_dir={out}", "train.epochs=2",
        "neck={name: mean_max, embedding_size: 32}", "loss={name: normface, s: 20.0}",
        "postprocess=[{name: alpha_qe, k: 2}, {name: knn}]"], installed)
    return out


def test_installed_plugin_trains_packs_and_runs_in_the_zip_without_installation(plugin_run, installed, tiny_survey, tmp_path):
    from submission.check import check

    zip_path = tmp_path / "s.zip"
    py(["-m", "submission.build", "--run", str(plugin_run), "--out", str(zip_path)], installed)
    names = set(zipfile.ZipFile(zip_path).namelist())
    assert {"whaleid_example/__init__.py", "whaleid_example/necks.py", "whaleid_example/losses.py",
            "whaleid_example/rerank.py", "whaleid_example/defaults.json"} <= names
    manifest = json.loads(zipfile.ZipFile(zip_path).read("manifest.json"))
    assert "whaleid_example" in manifest["plugins"]
    # this test process has no PYTHONPATH to the installed copy: the zip alone must carry the plugin
    with pytest.raises(ImportError):
        __import__("whaleid_example")
    result = check(zip_path, tiny_survey / "test", tiny_survey / "test_labels.csv", keep=True, runtime="here")
    assert result["problems"] == [] and result["format"] == "valid", result
    assert "whaleid_example" in result["imports"]
    # the package's code runs on the 2022 runtime too (here: checked in a subprocess, where nothing is installed)
    assert_same_in_twin(zip_path, tiny_survey, here=lambda z, s: check(z, s / "test", s / "test_labels.csv", keep=True,
                                                                        runtime="here"))

    # the step's effect on the rankings: the same zip without alpha_qe ranks differently
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(plain, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "manifest.json":
                m = json.loads(data)
                m["postprocess"] = [s for s in m["postprocess"] if s["name"] != "alpha_qe"]
                data = json.dumps(m).encode()
            dst.writestr(item, data)
    other = check(plain, tiny_survey / "test", tiny_survey / "test_labels.csv", keep=True, runtime="here")
    assert other["problems"] == []
    a = pd.read_csv(result["submission_csv"]).sort_values(["query_id", "database_image_id"]).reset_index(drop=True)
    b = pd.read_csv(other["submission_csv"]).sort_values(["query_id", "database_image_id"]).reset_index(drop=True)
    assert not a.equals(b)


# ---- dependency checks and safe loading, on small packages made here ------------------------------

def make_package(root: Path, name: str, init: str, **modules: str) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(init))
    for mod, text in modules.items():
        (pkg / f"{mod}.py").write_text(textwrap.dedent(text))
    return pkg


NECK = """
from core.hookspecs import hookimpl
from torch import nn
{extra}
@hookimpl
def register_necks(register):
    register("{neck}", lambda in_features, embedding_size=8: nn.Linear(in_features, embedding_size))
"""


def test_a_dependency_outside_the_runtime_fails_the_build_clearly(tmp_path, monkeypatch):
    from submission.build import BuildError, check_plugin_dependencies, plugin_files

    make_package(tmp_path, "needs_xgb", NECK.format(extra="WHALEID_REQUIRES = ['scipy>=1.0', 'xgboost', 'numpy']", neck="n1"))
    make_package(tmp_path, "needs_new_timm", NECK.format(extra="WHALEID_REQUIRES = ['timm>=0.9']", neck="n3"))
    make_package(tmp_path, "fits", NECK.format(extra="WHALEID_REQUIRES = ['scipy>=1.0', 'torch<1.9', 'opencv-python']", neck="n4"))
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {arc: src.read_bytes() for arc, src in plugin_files("needs_xgb").items()}
    with pytest.raises(BuildError, match=r"plugin needs_xgb needs xgboost \(not in the runtime\) \(needs_xgb.WHALEID_REQUIRES\)"):
        check_plugin_dependencies(["needs_xgb"], files)
    files = {arc: src.read_bytes() for arc, src in plugin_files("needs_new_timm").items()}
    with pytest.raises(BuildError, match=r"needs timm>=0.9 \(the runtime has timm 0.5.4\)"):
        check_plugin_dependencies(["needs_new_timm"], files)
    check_plugin_dependencies(["fits"], {arc: src.read_bytes() for arc, src in plugin_files("fits").items()})


def test_an_undeclared_import_outside_the_runtime_fails_the_build_naming_the_line(tmp_path, monkeypatch):
    from submission.build import BuildError, check_plugin_dependencies, plugin_files

    make_package(tmp_path, "sneaky", NECK.format(extra="from sneaky import helper", neck="n2"),
                 helper="import os\n\ndef f():\n    import lightgbm\n    return lightgbm\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {arc: src.read_bytes() for arc, src in plugin_files("sneaky").items()}
    assert {"sneaky/__init__.py", "sneaky/helper.py"} <= set(files)
    with pytest.raises(BuildError, match=r"sneaky/helper.py line 4 imports lightgbm"):
        check_plugin_dependencies(["sneaky"], files)


def fake_distribution(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[whaleid]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


def test_broken_installed_plugin_is_named_and_can_be_excluded(tmp_path, monkeypatch):
    from core.plugins import PluginError, build_registries

    make_package(tmp_path, "good_plug", NECK.format(extra="", neck="good_neck"))
    make_package(tmp_path, "bad_plug", "raise RuntimeError('needs a GPU driver')\n")
    fake_distribution(tmp_path, "good_dist", {"goodies": "good_plug"})
    fake_distribution(tmp_path, "bad_dist", {"baddies": "bad_plug"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"installed plugin 'baddies' \(bad_plug, from bad_dist\): RuntimeError: "
                                          r"needs a GPU driver.*plugins_exclude: \[baddies\]"):
        build_registries()
    reg = build_registries(exclude=["baddies"])
    assert reg["neck"].providers["good_neck"] == "good_plug"
    assert reg["neck"].sources["good_neck"] == "entry point 'goodies' (good_dist)"
    # listed in the config as well: still registered once
    assert build_registries(["good_plug"], exclude=["baddies"])["neck"].providers["good_neck"] == "good_plug"


def test_clashing_component_names_name_both_providers(tmp_path, monkeypatch):
    from core.plugins import PluginError, build_registries

    make_package(tmp_path, "clash_a", NECK.format(extra="", neck="gem_bn"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"neck 'gem_bn' is registered twice: by plugins.necks.gem_bn \(built-in\) "
                                          r"and by clash_a \(config\)"):
        build_registries(["clash_a"])


def test_plugins_exclude_is_a_config_key():
    from core.config import load_config

    assert list(load_config(ROOT / "configs" / "smoke.yaml", ["plugins_exclude=[x]"]).plugins_exclude) == ["x"]
