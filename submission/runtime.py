"""The 2022 runtime: what it has (one list, ``runtime-2022.txt``) and its twin (a Python 3.9 venv of it).

    python -m submission.runtime build [--if-available] [--force]   # make the twin in .twin/ (once)
    python -m submission.runtime info                               # what the runtime has, and the twin's state

``runtime-2022.txt`` pins the packages of the competition's code-execution image (see its header for the
source and every difference PyPI forces). ``submission.build`` checks bundles against ``DISTRIBUTIONS`` and
``MODULES`` read from it, ``submission.check --runtime 2022`` runs ``main.py`` with the twin's interpreter,
and ``make runtime-twin`` installs the same file. Nothing else lists what the runtime has.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).resolve().with_name("runtime-2022.txt")
TWIN = Path(os.environ.get("WHALEID_TWIN", ROOT / ".twin"))
STAMP = ".requirements.sha256"
INSTALL_HINT = ("no Python 3.9 interpreter found (looked for python3.9 on PATH, pyenv's versions and /usr/bin). "
                "Install one, e.g. `pyenv install 3.9.18`, `apt-get install python3.9 python3.9-venv` or "
                "`uv python install 3.9`, or name it with PYTHON39=/path/to/python3.9")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Runtime:
    python: str  # "3.9"
    pins: dict = field(default_factory=dict)  # normalised distribution -> version (every line, transitive too)
    distributions: frozenset = frozenset()  # what a bundle may declare: direct pins and their aliases
    modules: frozenset = frozenset()  # top-level modules a bundle may import
    requirements: tuple = ()  # the pip lines, in order


def parse(path: Path = REQUIREMENTS) -> Runtime:
    """Read a runtime file: ``name==version  # imports: a b; also: alias ...; transitive`` per line, and a
    ``# python: X.Y`` line. A transitive line is installed but not offered to bundles."""
    python, pins, dists, modules, reqs = None, {}, set(), set(), []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text, _, comment = line.partition("#")
        text, comment = text.strip(), comment.strip()
        if not text:
            found = re.match(r"python:\s*(\d+\.\d+)$", comment)
            python = found.group(1) if found else python
            continue
        found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", text)
        if not found:
            raise ValueError(f"{path} line {number}: expected name==version, got {text!r}")
        name, version = _norm(found.group(1)), found.group(2)
        pins[name] = version
        reqs.append(f"{found.group(1)}=={version}")
        notes = {k.strip(): v.split() for k, _, v in (part.partition(":") for part in comment.split(";")) if k.strip()}
        if "transitive" in notes:
            continue
        dists |= {name} | {_norm(a) for a in notes.get("also", [])}
        modules |= set(notes.get("imports", [found.group(1).replace("-", "_").lower()]))
    if python is None:
        raise ValueError(f"{path}: no '# python: X.Y' line")
    return Runtime(python, pins, frozenset(dists), frozenset(modules), tuple(reqs))


RUNTIME = parse()
PYTHON = tuple(int(x) for x in RUNTIME.python.split("."))
DISTRIBUTIONS = RUNTIME.distributions
MODULES = RUNTIME.modules


def requirements_hash(path: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def twin_python(twin: Path = TWIN) -> Path | None:
    """The twin's interpreter when the twin is built from today's ``runtime-2022.txt``, else None."""
    python, stamp = twin / "bin" / "python", twin / STAMP
    if python.is_file() and stamp.is_file() and stamp.read_text().strip() == requirements_hash():
        return python
    return None


@functools.lru_cache(maxsize=None)  # every build asks; the answer needs a subprocess per candidate
def find_python(version: str = RUNTIME.python) -> str | None:
    """A Python ``version`` interpreter: $PYTHON39, pythonX.Y on PATH, pyenv's newest X.Y.*, /usr/bin."""
    candidates = [os.environ.get("PYTHON39", ""), shutil.which(f"python{version}") or ""]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        found = sorted(pyenv.glob(f"{version}.*/bin/python{version}"),
                       key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)])
        candidates += [str(p) for p in reversed(found)]
    candidates.append(f"/usr/bin/python{version}")
    for c in candidates:
        if not c or not Path(c).is_file():
            continue
        try:
            out = subprocess.run([c, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return c
    return None


def build_twin(twin: Path = TWIN, force: bool = False, python: str | None = None) -> Path:
    """Create the twin venv and install ``runtime-2022.txt`` into it (skipped when already built)."""
    if not force and twin_python(twin):
        print(f"runtime twin up to date: {twin}", file=sys.stderr)
        return twin / "bin" / "python"
    python = python or find_python()
    if python is None:
        raise RuntimeError(INSTALL_HINT)
    if twin.exists():
        shutil.rmtree(twin)
    print(f"building the 2022 runtime twin in {twin} with {python} (about 700 MB of wheels, 1-3 minutes)",
          file=sys.stderr)
    subprocess.run([python, "-m", "venv", str(twin)], check=True)
    tpy = twin / "bin" / "python"
    pip = [str(tpy), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"]
    # pip is not pinned by the runtime (it had 20.3.4); a current one resolves the same pins
    subprocess.run(pip + ["-r", str(REQUIREMENTS)], check=True)
    (twin / STAMP).write_text(requirements_hash() + "\n")
    versions = twin_versions(tpy)
    wrong = {n: (v, versions.get(n)) for n, v in RUNTIME.pins.items() if versions.get(n) != v}
    if wrong:
        raise RuntimeError(f"the twin's packages differ from {REQUIREMENTS.name}: {wrong}")
    print(f"runtime twin ready: {tpy} (python {versions['python']}, torch {versions['torch']}, "
          f"timm {versions['timm']})", file=sys.stderr)
    return tpy


VERSIONS_SCRIPT = r"""
import json, re, sys
from importlib import metadata
out = {"python": "%d.%d.%d" % sys.version_info[:3]}
for d in metadata.distributions():
    out[re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()] = d.version
print(json.dumps(out))
"""


def twin_versions(python) -> dict:
    """Python and every installed distribution's version (normalised names) of an interpreter."""
    out = subprocess.run([str(python), "-c", VERSIONS_SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def describe(python) -> dict:
    """What ``submission.check`` reports of the interpreter it ran ``main.py`` with."""
    versions = twin_versions(python)
    return {"python": str(python), "python_version": versions["python"],
            "packages": {n: versions.get(n) for n in ("torch", "torchvision", "timm", "numpy", "pandas", "pillow",
                                                      "faiss-cpu", "pluggy", "omegaconf")}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m submission.runtime", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="create the twin venv (.twin/, or $WHALEID_TWIN) from runtime-2022.txt")
    b.add_argument("--if-available", action="store_true",
                   help="when no Python 3.9 is found, say so and exit 0 instead of failing")
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    sub.add_parser("info", help="print the runtime's package set and the twin's state as JSON")
    args = p.parse_args(argv)
    if args.cmd == "info":
        tpy = twin_python()
        print(json.dumps({"python": RUNTIME.python, "requirements": str(REQUIREMENTS), "pins": RUNTIME.pins,
                          "modules": sorted(MODULES), "twin": str(tpy) if tpy else None}, indent=2))
        return
    try:
        build_twin(force=args.force)
    except RuntimeError as exc:
        if args.if_available and find_python() is None:
            print(f"note: the runtime twin is not built: {exc}", file=sys.stderr)
            return
        p.exit(2, f"error: {exc}\n")
    except subprocess.CalledProcessError as exc:
        p.exit(2, f"error: building the twin failed ({exc}); see pip's output above\n")


if __name__ == "__main__":
    main()
