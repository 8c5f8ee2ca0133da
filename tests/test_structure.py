"""The house's structure: layers that import only downwards, no cycles, the inference core apart from training."""

from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("core", "plugins", "submission", "tools", "catalogue")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, at any depth of the file (``from a import b`` counts ``a.b`` when
    that is a module, else ``a``), read by ``core.imports`` as the bundle's builder reads them."""
    from core.imports import read_imports

    found = set()
    for imp in read_imports(path.read_text(), str(path)):
        names = [f"{imp.module}.{n}" if f"{imp.module}.{n}" in known else imp.module for n in imp.names] \
            if imp.names else [imp.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {m: imports_of(p, set(mods)) - {m} for m, p in mods.items()}


def layer(module: str) -> str:
    if module == "core.run" or module.startswith("core.training"):
        return "training"
    return module.split(".")[0]


# what each layer may import: the inference core only itself; plugins the core; training both;
# submission and tools anything but each other's private parts (tools may read submission's build)
ALLOWED = {
    "core": {"core"},
    "plugins": {"core", "plugins"},
    "training": {"core", "training"},
    "submission": {"core", "plugins", "training", "submission"},
    "catalogue": {"core", "training", "catalogue"},
    "tools": {"core", "plugins", "training", "submission", "catalogue", "tools"},
}
# of training code, submission/ and tools/ read run folders only (core.training.runs); scoring is the inference
# core's (core.metric). The exceptions run training code on purpose: the benches of the training step and the
# GPU check time it, and fit_local and the quality bench run the step core/run.py runs after training.
TRAINING_USERS = {"tools.bench.train_step": {"core.training.loop"}, "tools.bench.gpu_check": {"core.training.loop"},
                  "tools.fit_local": {"core.training.fit"}, "tools.bench.quality": {"core.training.fit"},
                  "tools.bench.local_fusion": {"core.training.fit"},
                  "submission.build": {"core.training.fit"}}  # an ensemble's bundle fits its fusion on its own scores


def test_imports_run_only_downwards():
    bad = [f"{m} imports {t}" for m, targets in graph().items() for t in targets
           if layer(t) not in ALLOWED[layer(m)]]
    assert not bad, bad


def test_the_inference_core_cannot_reach_training_code():
    """No module of core/ outside core/training/ and the runner imports training code, so whatever a bundle
    carries of core/ cannot pull training in; the bundle's own check refuses such an import (build.FORBIDDEN_IMPORT)."""
    g = graph()
    inference = {m for m in g if layer(m) == "core"}
    reach, todo = set(), list(inference)
    while todo:
        m = todo.pop()
        for t in g.get(m, ()):
            if t not in reach:
                reach.add(t)
                todo.append(t)
    assert not {m for m in reach if layer(m) == "training"}
    assert {"core.inference", "core.model", "core.retrieval"} <= inference
    assert {"core.training.loop", "core.training.checkpoint", "core.training.runs"} <= set(g)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [m, t]))
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])


def test_submission_and_tools_read_run_folders_only_of_training_code():
    bad = [f"{m} imports {t}" for m, targets in graph().items() if layer(m) in ("submission", "tools")
           for t in targets if layer(t) == "training" and t != "core.training.runs"
           and t not in TRAINING_USERS.get(m, ())]
    assert not bad, bad


def test_only_core_bundle_and_the_builder_open_bundle_zips():
    """Reading a bundle lives in core/bundle.py (safety check, unpacking, sys.path, manifest, embedding); only
    submission/build.py writes one."""
    from core.imports import read_imports

    openers = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                     if "zipfile" in {i.top for i in read_imports(p.read_text(), str(p))})
    assert openers == ["core/bundle.py", "submission/build.py"], openers


def test_no_core_or_catalogue_file_is_long_and_the_runner_is_short():
    long = {str(p.relative_to(ROOT)): n for pkg in ("core", "catalogue") for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long
    assert len((ROOT / "core" / "run.py").read_text().splitlines()) < 260


def test_the_bundle_checker_refuses_training_imports():
    from core.imports import training_imports

    for line in ("from core.training.runs import history", "import core.training.loop", "import accelerate",
                 "from core.run import main", "from core import training", "def f():\n    import accelerate.utils"):
        assert training_imports(line), line
    assert not training_imports("from core.retrieval import build_steps\nimport core.runs_helper")


def test_one_reader_of_import_statements():
    """core/imports.py reads import statements; the builder and this test use it, and nothing else in the
    project walks a syntax tree for imports."""
    readers = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                     if "ast.ImportFrom" in p.read_text())
    assert readers == ["core/imports.py"], readers


# the catalogue's rooms, lowest first: each imports only rooms before it in this list (and itself); cli.py sits on top
ROOMS = ("records", "embedding", "deciding", "review", "exchange")
# review and exchange stand side by side: neither imports the other
BESIDE = {("review", "exchange"), ("exchange", "review")}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else module


def test_the_catalogue_is_in_rooms_that_import_only_downwards():
    """``catalogue/`` holds rooms by job, each a package with an opening docstring, and ``cli.py`` over them; a
    room imports only the rooms below it (``ROOMS``), so the store never reaches identify, nor identify the server."""
    import importlib

    mods = project_modules()
    loose = sorted(p.name for p in (ROOT / "catalogue").glob("*.py"))
    assert loose == ["__init__.py", "cli.py"], loose
    assert sorted(p.parent.name for p in (ROOT / "catalogue").glob("*/__init__.py")) == sorted(ROOMS)
    for name in ROOMS:
        doc = importlib.import_module(f"catalogue.{name}").__doc__ or ""
        assert len(doc.split()) >= 30, f"catalogue/{name}/__init__.py needs its one-paragraph docstring"
    bad = []
    for m, targets in graph().items():
        if not m.startswith("catalogue.") or m == "catalogue.cli":
            continue
        for t in targets:
            if t == "catalogue.cli":
                bad.append(f"{m} imports the command line")
            elif t.startswith("catalogue.") and room(t) != room(m) and (
                    ROOMS.index(room(t)) > ROOMS.index(room(m)) or (room(m), room(t)) in BESIDE):
                bad.append(f"{m} ({room(m)}) imports {t} ({room(t)})")
    assert not bad, bad


# the catalogue's SQL has one home: the store (store.py), its other statements (tables.py) and the schema
SQL_HOMES = {"catalogue.records.store", "catalogue.records.tables", "catalogue.records.schema"}


def test_the_catalogues_sql_lives_in_the_store_modules_only():
    """No catalogue module outside the store's reaches the SQLite connection (``.conn``, ``._write()``) or spells a
    statement (a string starting SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, PRAGMA or BEGIN)."""
    import re

    reach = re.compile(r"\.conn\b|\._write\(")
    statement = re.compile(r"""["'](SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|PRAGMA|BEGIN)\b""")
    bad = []
    for name, path in project_modules().items():
        if name.startswith("catalogue.") and name not in SQL_HOMES:
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if reach.search(line) or statement.search(line):
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, bad


def test_local_matching_has_one_source_of_defaults():
    """The catalogue's keypoint options, ``whaleid calibrate``'s and ``tools.fit_local``'s defaults are the
    ``local_match`` step's own: no module spells them again."""
    import inspect
    import re

    from catalogue.cli import parser
    from catalogue.deciding.local import KEYED_BY, step_defaults
    from plugins.postprocess.local_match import LocalMatch

    own = {k: p.default for k, p in inspect.signature(LocalMatch).parameters.items()}
    assert {k: own[k] for k in KEYED_BY} == {k: step_defaults()[k] for k in KEYED_BY}
    calibrate = parser()._subparsers._group_actions[0].choices["calibrate"]
    assert {a.dest: a.default for a in calibrate._actions if a.dest in ("detector", "matcher", "max_side")} == \
        {"detector": None, "matcher": None, "max_side": None}
    spelled = re.compile(r"""["']detector["']\s*:\s*["']sift|max_side["']?\s*[:=]\s*512|default=512|default=["']sift""")
    for path in (ROOT / "catalogue" / "deciding" / "local.py", ROOT / "catalogue" / "cli.py", ROOT / "tools" / "fit_local.py"):
        assert not spelled.search(path.read_text()), path


def test_a_fit_leaves_config_yaml_as_asked():
    """``core.training.fit`` writes what it fitted to ``fitted.yaml`` (``core.training.runs.write_fitted``), never to
    ``config.yaml``; the bundle's builder and the tools that rank a run read the two through ``run_config``
    (tests/plugins/test_local_match.py checks the file is byte for byte the same after a fit)."""
    fit = (ROOT / "core" / "training" / "fit.py").read_text()
    assert "OmegaConf.save" not in fit and "write_text" not in fit and "write_fitted(" in fit
    for reader in ("submission/build.py", "tools/report.py", "tools/ensemble.py", "tools/fit_local.py"):
        assert "run_config(" in (ROOT / reader).read_text(), reader


def test_identify_takes_plain_values_not_the_command_line():
    """``catalogue.deciding.identify`` is a function of plain values returning a result; the console parses
    arguments and prints (``catalogue/cli.py``)."""
    from core.imports import read_imports

    path = ROOT / "catalogue" / "deciding" / "identify.py"
    text = path.read_text()
    assert "argparse" not in {i.top for i in read_imports(text, str(path))}
    assert "args." not in text and "print(" not in text


# core/'s modules that never ship in a bundle (core/__init__.py names the three kinds)
CORE_HELPERS = {"core.bundle", "core.contracts", "core.imports", "core.ann", "core.explain"}


def test_core_is_described_as_it_is():
    """Every module of core/ is named in core/__init__.py's docstring, and what a bundle's ``main.py`` and the
    built-in plugins reach of core/ is neither training code nor one of the never-shipped helpers."""
    import core

    names = {m.split(".")[1] for m in project_modules() if m.startswith("core.") and m.count(".") == 1}
    missing = sorted(n for n in names if f"``{n}``" not in core.__doc__ and n not in ("run", "training"))
    assert not missing, f"core/__init__.py does not describe {missing}"
    g = graph()
    start = {m for m in g if m.startswith("plugins.")} | {"core.inference"}
    reach, todo = set(start), list(start)
    while todo:
        for t in g.get(todo.pop(), ()):
            if t not in reach:
                reach.add(t)
                todo.append(t)
    assert not reach & CORE_HELPERS, sorted(reach & CORE_HELPERS)
    assert not {m for m in reach if layer(m) == "training"}


# the suite mirrors the packages; at its root only what spans them all (the fixtures, the helpers, the house's
# structure, the install and every console command as users run it)
TEST_ROOT = {"__init__.py", "conftest.py", "helpers.py", "test_structure.py", "test_install.py", "test_commands.py"}


def test_the_tests_mirror_the_packages():
    root = ROOT / "tests"
    assert {p.name for p in root.glob("*.py")} == TEST_ROOT
    folders = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(PACKAGES), folders


def test_the_ranking_step_is_found_one_way():
    """A re-ranker's ranking step is ``core.training.fit.ranking_step`` (the last step whose factory keeps top_k),
    for the fit and for ``tools.fit_local`` alike; no module lists ranking steps by name."""
    for path in (ROOT / "core" / "training" / "fit.py", ROOT / "tools" / "fit_local.py"):
        text = path.read_text()
        assert "ranking_step(" in text and '"db_anchor_rerank"' not in text and '"top_k" in specs' not in text, path
