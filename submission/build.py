"""Package trained runs into the competition's ``submission.zip``.

    python -m submission.build --run runs/A [--run runs/B ...] [--weight 1 --weight 0.75] --out submission/submission.zip
    python -m submission.build --ensemble runs/ensemble.json --out submission/submission.zip

A ``--run`` may be a cross-validation folder (``data.fold=all``) or a seeds folder: every fold/seed model
goes in, sharing that run's weight equally. ``--ensemble`` takes the members and weights that
``tools.ensemble`` chose on out-of-fold data.

The zip holds ``main.py`` at its root, the inference modules of ``core/``, only the plugin modules the
runs' configs name, each run's resolved config and best weights under ``models/<k>/``, and
``manifest.json`` (versions, git commit, file hashes, how the models are combined). Several runs
form a weighted ensemble: per-model cosine similarities averaged with the given weights (default:
each config's ``ensemble_weight``). Nothing training-only goes in: no accelerate, no ``core/run.py``, nothing of ``core/training/``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from core.imports import ImportReadError, core_modules, read_imports, training_imports

ROOT = Path(__file__).resolve().parent.parent
# standard-library modules of today's Python that Python 3.9 (the runtime's) lacks
NEWER_STDLIB = {"tomllib", "_tokenize"}
RUNTIMES = ("2022", "here")  # what a bundle is for: the competition's runtime, or this installation


class BuildError(ValueError):
    pass


def imports(source: str, arc: str) -> list:
    """``core.imports.read_imports``, a file that cannot be parsed being a build error that names it."""
    try:
        return read_imports(source, arc)
    except ImportReadError as exc:
        raise BuildError(str(exc)) from exc


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict:
    """Versions, on the build machine, of the runtime's packages that are installed here."""
    from submission.runtime import RUNTIME

    out = {"python": sys.version.split()[0]}
    for name in sorted(RUNTIME.pins):
        if _normalise(name) in RUNTIME.distributions:
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    return out


def plugin_modules(cfg) -> list[str]:
    """Modules providing the inference components (backbone, neck, postprocess steps) of ``cfg``."""
    from omegaconf import ListConfig

    from core.hookspecs import INFERENCE_POINTS
    from core.plugins import build_registries

    registries = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])
    names = set()
    for point in INFERENCE_POINTS:  # a list of steps (postprocess) or one component
        specs = cfg[point] if isinstance(cfg[point], ListConfig) else [cfg[point]]
        names |= {registries[point].providers.get(spec["name"]) for spec in specs}
    if None in names:
        raise BuildError(f"a component of the config has no provider: {names}")
    return sorted(names)


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def module_file(name: str) -> tuple[str, Path]:
    """(path inside the zip, source file) of a single-file plugin module."""
    module = importlib.import_module(name)
    src = Path(module.__file__)
    return name.replace(".", "/") + (".py" if src.name != "__init__.py" else "/__init__.py"), src


def package_files(top: str) -> dict[str, Path]:
    """Every ``.py`` under the top-level package ``top`` and the data files its distribution declares,
    keyed by their path inside the zip (import paths stay as they are)."""
    module = importlib.import_module(top)
    roots = [Path(p) for p in getattr(module, "__path__", [])]
    if not roots:
        raise BuildError(f"{top} is not a package")
    out: dict[str, Path] = {}
    for root in roots:
        for src in sorted(root.rglob("*.py")):
            if "__pycache__" not in src.parts:
                out[f"{top}/{src.relative_to(root).as_posix()}"] = src
    for dist in _distributions(top):
        for f in metadata.distribution(dist).files or []:
            parts = Path(str(f)).parts
            if parts and parts[0] == top and "__pycache__" not in parts and not str(f).endswith((".py", ".pyc")):
                src = Path(str(f.locate()))
                if src.is_file():
                    out[Path(str(f)).as_posix()] = src
    return out


def _distributions(top: str) -> list[str]:
    try:
        return sorted(set(metadata.packages_distributions().get(top, [])))
    except Exception:
        return []


def plugin_files(name: str) -> dict[str, Path]:
    """What the bundle needs of the plugin module ``name``: one file for whaleid's own plugins and
    single-module plugins, the whole top-level package for a packaged one (entry point or not)."""
    top = name.split(".")[0]
    try:
        top_module = importlib.import_module(top)
    except ImportError as exc:
        raise BuildError(f"cannot import plugin module {name}: {exc}") from exc
    own = Path(getattr(top_module, "__file__", "") or "").resolve().is_relative_to(ROOT) if getattr(top_module, "__file__", None) else False
    if top == "plugins" and own:  # whaleid's own plugins: the module and the plugins modules it imports
        out, todo = {}, [name]
        while todo:
            arc, src = module_file(todo.pop())
            if arc in out:
                continue
            out[arc] = src
            todo += [i.module for i in imports(src.read_text(), arc) if i.module.startswith("plugins.")]
        return out
    if not hasattr(top_module, "__path__"):
        arc, src = module_file(name)
        return {arc: src}
    return package_files(top)


def declared_requirements(name: str) -> tuple[list[str], str]:
    """(requirements a plugin's inference code needs, e.g. ``["torch", "numpy>=1.20"]``, where that was declared):
    a module-level ``WHALEID_REQUIRES`` in the plugin module or its top-level package, else its distribution's
    ``Requires-Dist`` (extras and environment markers left out)."""
    for mod_name in dict.fromkeys([name, name.split(".")[0]]):
        module = importlib.import_module(mod_name)
        if hasattr(module, "WHALEID_REQUIRES"):
            reqs = module.WHALEID_REQUIRES
            if isinstance(reqs, str) or not all(isinstance(r, str) for r in reqs):
                raise BuildError(f"{mod_name}.WHALEID_REQUIRES must be a list of requirements, got {reqs!r}")
            return [r.strip() for r in reqs if r.strip()], f"{mod_name}.WHALEID_REQUIRES"
    found = []
    dists = _distributions(name.split(".")[0])
    for dist in dists:
        for req in metadata.requires(dist) or []:
            if "extra ==" in req.replace("extra==", "extra =="):
                continue
            found.append(req.split(";")[0].strip())
    return found, (f"the requirements of distribution {', '.join(dists)}" if dists else "nothing declared")


def runtime_misfits(reqs: list[str], where: str) -> list[str]:
    """The requirements the 2022 runtime cannot meet: a distribution it lacks, or a version range its pinned
    version is outside of (``timm>=0.9`` against its 0.5.4)."""
    from packaging.requirements import InvalidRequirement, Requirement

    from submission.runtime import DISTRIBUTIONS, RUNTIME

    misfits = []
    for text in reqs:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise BuildError(f"{where}: {text!r} is not a requirement ({exc})") from exc
        name = _normalise(req.name)
        if name == "whaleid":  # the bundle carries what it needs of whaleid
            continue
        if name not in DISTRIBUTIONS:
            misfits.append(f"{req.name} (not in the runtime)")
        elif name in RUNTIME.pins and req.specifier and not req.specifier.contains(RUNTIME.pins[name], prereleases=True):
            misfits.append(f"{text} (the runtime has {req.name} {RUNTIME.pins[name]})")
    return misfits


def check_plugin_dependencies(modules: list[str], files: dict[str, bytes]) -> None:
    """Fail the build when a plugin declares a distribution the runtime lacks, or when bundled code
    imports a module that is neither in the bundle, the standard library nor the runtime set."""
    from submission.runtime import DISTRIBUTIONS, MODULES as RUNTIME_MODULES, REQUIREMENTS

    for name in modules:
        if name.split(".")[0] == "plugins":
            continue
        reqs, where = declared_requirements(name)
        outside = runtime_misfits(reqs, where)
        if outside:
            raise BuildError(f"plugin {name} needs {', '.join(outside)} ({where}), which the competition runtime does "
                             f"not provide (it has {', '.join(sorted(DISTRIBUTIONS))}; versions in {REQUIREMENTS.name}). If only "
                             "training needs it, declare what inference needs in WHALEID_REQUIRES")
    bundled = {arc.split("/")[0].removesuffix(".py") for arc in files} | {"core"}  # core/ goes in every bundle
    for arc, data in sorted(files.items()):
        if not arc.endswith(".py") or arc.startswith("core/") or arc == "main.py":
            continue
        for top, line in ((i.top, i.line) for i in imports(data.decode(), arc)):
            if (top in sys.stdlib_module_names and top not in NEWER_STDLIB) or top in bundled or top in RUNTIME_MODULES or top == "__future__":
                continue
            raise BuildError(f"{arc} line {line} imports {top}, which is neither bundled, in the standard library "
                             f"nor in the competition runtime ({', '.join(sorted(RUNTIME_MODULES))}); the submission "
                             "would fail there. Import it only in training code that the bundle leaves out, or drop it")


def step_needs(cfg, chain: list, run: Path, runtime: str) -> set:
    """The modules a chain's steps load by name for their options (``modules_for``), to carry in a bundle for
    this installation (``runtime`` "here"); for the 2022 runtime, a step whose options need a package it lacks
    (``runtime_requirements``: ``local_match`` with the learned ``detector: xfeat``) fails the build."""
    from core.plugins import build_registries

    registry = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])["postprocess"]
    extra = set()
    for spec in chain:
        factory, options = registry.factory(spec["name"]), {k: v for k, v in spec.items() if k != "name"}
        needs = getattr(factory, "runtime_requirements", None)
        outside = runtime_misfits(list(needs(options)), f"postprocess {spec['name']}") if needs else []
        if outside and runtime == "2022":
            raise BuildError(f"{run}: postprocess {spec['name']} with {options} needs {', '.join(outside)}, which the "
                             "2022 competition runtime (Python 3.9, torch 1.8.0) cannot give; the bundle would fail "
                             "there. Pack it for this installation (--runtime here: the catalogue, submission.check "
                             "--runtime here), or pack a run whose step uses the runtime's packages (detector: sift)")
        extra |= set(getattr(factory, "modules_for", lambda o: [])(options))
    return extra


def core_files(files: dict[str, bytes]) -> dict[str, Path]:
    """The ``core`` modules the bundle's code imports, followed through core's own imports: the inference
    core, by what it imports, not by a list. ``core/__init__.py`` always goes in."""
    core = ROOT / "core"
    out = {"core/__init__.py": core / "__init__.py"}
    todo = [(arc, data.decode()) for arc, data in files.items() if arc.endswith(".py")]
    while todo:
        arc, source = todo.pop()
        for name in core_modules(source, arc):
            target = f"core/{name}.py"
            if target not in out and (core / f"{name}.py").is_file():
                out[target] = core / f"{name}.py"
                todo.append((target, out[target].read_text()))
    return out


PY39_CHECK = r"""
import json, sys
bad = []
for arc, source in json.load(sys.stdin).items():
    try:
        compile(source, arc, "exec", dont_inherit=True)
    except SyntaxError as exc:
        bad.append([arc, exc.lineno, exc.msg])
print(json.dumps(bad))
"""


def check_python_version(files: dict[str, bytes]) -> None:
    """Stop the build when a bundled file has syntax the runtime's Python (3.9) cannot compile, naming the file
    and line. Compiled by a real Python 3.9 when one is found (the twin's, or any), else parsed with ``ast``'s
    3.9 grammar, which catches most newer syntax (match statements, ``except*``, parenthesised context managers)."""
    import ast

    from submission.runtime import PYTHON, find_python, twin_python

    sources = {arc: data.decode() for arc, data in files.items() if arc.endswith(".py")}
    python = twin_python() or find_python()
    if python:
        out = subprocess.run([str(python), "-c", PY39_CHECK], input=json.dumps(sources), capture_output=True,
                             text=True, timeout=300)
        if out.returncode == 0:
            for arc, line, msg in json.loads(out.stdout):
                raise BuildError(f"{arc} line {line}: {msg} under Python {PYTHON[0]}.{PYTHON[1]}, the runtime's; "
                                 "the bundle would not run there")
            return
    for arc, source in sources.items():
        try:
            ast.parse(source, filename=arc, feature_version=PYTHON)
        except SyntaxError as exc:
            raise BuildError(f"{arc} line {exc.lineno}: {exc.msg} under Python {PYTHON[0]}.{PYTHON[1]}'s grammar, the "
                             "runtime's; the bundle would not run there") from exc


def resolve_weights(run: Path) -> Path:
    for name in ("best.safetensors", "last.safetensors"):
        if (run / name).is_file():
            return run / name
    raise BuildError(f"{run}: no best.safetensors or last.safetensors; train the run first")


def expand_runs(runs: list[Path], weights: list[float] | None) -> tuple[list[Path], list[float]]:
    """Single runs with their weights: a CV or seeds folder becomes its fold/seed runs, which share the
    folder's weight equally (so a 5-fold member counts as much as a 4-fold one, as in the OOF search)."""
    from core.training.runs import RunError, leaf_runs

    if weights and len(weights) != len(runs):
        raise BuildError(f"{len(weights)} --weight values for {len(runs)} runs; give one per run or none")
    out_runs, out_weights = [], []
    for k, run in enumerate(runs):
        try:
            leaves = leaf_runs(run) if (run / "cv.json").is_file() or (run / "seeds.json").is_file() else [run]
        except RunError as exc:
            raise BuildError(str(exc)) from exc
        if weights and float(weights[k]) == 0:
            print(f"note: {run} has weight 0 and is left out", file=sys.stderr)
            continue
        out_runs += leaves
        if weights:
            total = float(weights[k])
        else:
            from omegaconf import OmegaConf

            cfg_path = run / "config.yaml"
            total = float(OmegaConf.load(cfg_path).get("ensemble_weight", 1.0)) if cfg_path.is_file() else 1.0
        out_weights += [total / len(leaves)] * len(leaves)
    if not out_runs:
        raise BuildError("every run has weight 0; nothing to pack")
    return out_runs, out_weights


def read_ensemble(path: Path) -> tuple[list[Path], list[float]]:
    """Members and weights from a ``tools.ensemble`` file (paths as written, else as resolved then)."""
    try:
        spec = json.loads(Path(path).read_text())
        members = spec["members"]
        runs = [Path(m["run"]) if Path(m["run"]).exists() else Path(m.get("path", m["run"])) for m in members]
        return runs, [float(m["weight"]) for m in members]
    except FileNotFoundError as exc:
        raise BuildError(f"ensemble file not found: {path}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{path}: not an ensemble file from tools.ensemble ({exc})") from exc


def expand_viewpoint_weights(runs: list[Path], weights: list[float] | None, spec: dict) -> dict:
    """Per scenario kind, a weight per packed model: ``spec[kind]`` gives one per ``--run``, shared equally by
    a CV or seeds run's models (the same expansion as ``--weight``, zero-weight runs included)."""
    from core.retrieval import VIEW_KINDS
    from core.training.runs import leaf_runs

    counts = [len(leaf_runs(r)) if (r / "cv.json").is_file() or (r / "seeds.json").is_file() else 1 for r in runs]
    kept = [k for k in range(len(runs)) if not (weights and float(weights[k]) == 0)]
    out = {}
    for kind, values in spec.items():
        if kind not in VIEW_KINDS:
            raise BuildError(f"viewpoint weights: unknown scenario kind {kind!r}; kinds are {', '.join(VIEW_KINDS)}")
        if not isinstance(values, list) or len(values) != len(runs) or any(float(v) < 0 for v in values):
            raise BuildError(f"viewpoint weights for {kind}: give {len(runs)} non-negative numbers, one per --run; "
                             f"got {values!r}")
        leaf = [float(values[k]) / counts[k] for k in kept for _ in range(counts[k])]
        if sum(leaf) <= 0:
            raise BuildError(f"viewpoint weights for {kind}: every packed model has weight 0")
        out[kind] = leaf
    return out


def build(runs: list[Path], out: Path, weights: list[float] | None = None, viewpoint_weights: dict | None = None,
          runtime: str = "2022") -> dict:
    """The bundle of ``runs`` at ``out``: for the 2022 competition runtime (``runtime`` "2022", checked against its
    packages and Python), or for this installation (``here``: what the catalogue and ``submission.check --runtime
    here`` open; a step may then use packages the 2022 runtime lacks)."""
    from omegaconf import OmegaConf

    from core.training.runs import RunError, run_config

    if not runs:
        raise BuildError("give at least one --run")
    if runtime not in RUNTIMES:
        raise BuildError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    given, given_weights = [Path(r) for r in runs], weights
    runs, weights = expand_runs(given, weights)
    by_view = expand_viewpoint_weights(given, given_weights, viewpoint_weights) if viewpoint_weights else {}
    files: dict[str, bytes] = {}
    models, modules, postprocess = [], set(), None
    for k, run in enumerate(runs):
        try:  # what was asked with what was fitted on its validation whales (fitted.yaml)
            cfg = run_config(run)
        except RunError as exc:
            raise BuildError(str(exc)) from exc
        chain = OmegaConf.to_container(cfg.postprocess, resolve=True)
        modules |= step_needs(cfg, chain, run, runtime)
        if postprocess is None:
            postprocess = chain
        elif chain != postprocess:
            print(f"note: {run} has another postprocess chain; the first run's is used (its fitted steps "
                  "fitted again on the ensemble's own scores)", file=sys.stderr)
        modules |= set(plugin_modules(cfg))
        weight = float(weights[k])
        # the trained weights replace any starting point: nothing may be fetched or read from the build machine
        if "pretrained" in cfg.backbone:
            cfg.backbone.pretrained = False
        if "weights" in cfg.backbone:
            cfg.backbone.weights = None
        files[f"models/{k}/config.yaml"] = OmegaConf.to_yaml(cfg).encode()
        files[f"models/{k}/weights.safetensors"] = resolve_weights(run).read_bytes()
        models.append({"run": f"{run.parent.name}/{run.name}" if run.name.startswith(("fold", "seed")) else run.name, "config": f"models/{k}/config.yaml", "weights": f"models/{k}/weights.safetensors",
                       "weight": weight, "image_size": list(cfg.data.image_size), "tta_flip": bool(cfg.infer.tta_flip),
                       "backbone": OmegaConf.to_container(cfg.backbone)})
    fit = None
    if len(runs) > 1:  # an ensemble ranks with its own scores: its fitted steps are fitted on them, not on run 0's
        from core.training.fit import fit_ensemble

        try:
            fit = fit_ensemble(runs, weights, postprocess)
        except (RunError, FileNotFoundError) as exc:
            raise BuildError(f"an ensemble with a fitted postprocess step is fitted on its members' validation "
                             f"whales: {exc}") from exc
        if fit is not None:
            postprocess = fit["chain"]
            print(f"fitted {', '.join(s['name'] for s in fit['steps'])} on the ensemble's own scores for "
                  f"{fit['queries']} validation queries of {fit['folds']} fold(s) ({fit['members']} models): val mAP "
                  f"{fit['validation_before']['mAP']:.4f} before, {fit['validation_after_in_sample']['mAP']:.4f} "
                  "after (in sample)", file=sys.stderr)
    files["main.py"] = (ROOT / "submission" / "main.py").read_bytes()
    packages = set()
    for name in sorted(modules):
        for arc, src in plugin_files(name).items():
            files[arc] = src.read_bytes()
            parts = arc.split("/")[:-1]
            packages |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    for pkg in packages:
        files.setdefault(f"{pkg}/__init__.py", b"")
    for arc, src in core_files(files).items():
        files[arc] = src.read_bytes()
    if runtime == "2022":  # a bundle for this installation runs on what is installed here
        check_python_version(files)
        check_plugin_dependencies(sorted(modules), files)
    for arc, data in files.items():
        found = training_imports(data.decode(), arc) if arc.endswith(".py") else []
        if found:
            raise BuildError(f"{arc} line {found[0].line} imports training-only code ({found[0].module}: accelerate, "
                             "core.run or core.training); it cannot go in the bundle")
    from core import __version__

    manifest = {
        "whaleid_version": __version__, "git_commit": git_commit(), "packages": package_versions(), "runtime": runtime,
        "plugins": sorted(modules), "postprocess": postprocess, "models": models, "viewpoint_weights": by_view,
        "postprocess_fit": None if fit is None else {
            "on": "the ensemble's scores for its members' validation whales", "folds": fit["folds"],
            "queries": fit["queries"], "steps": [{"step": s["step"], "name": s["name"], "options": s["options"]}
                                                 for s in fit["steps"]],
            "validation_before": fit["validation_before"]["mAP"],
            "validation_after_in_sample": fit["validation_after_in_sample"]["mAP"]},
        "combine": "per-model L2-normalised embeddings scaled by sqrt(weight / sum of weights) and concatenated: "
                   "inner products are the weighted mean of per-model cosine similarities",
        "files": {arc: hashlib.sha256(data).hexdigest() for arc, data in sorted(files.items())},
    }
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arc in sorted(files):
            info = zipfile.ZipInfo(arc, date_time=(2022, 1, 1, 0, 0, 0))  # fixed stamps: same inputs, same zip
            # weights are stored: float tensors barely compress, and deflating a large model costs minutes
            info.compress_type = zipfile.ZIP_STORED if arc.endswith(".safetensors") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[arc])
    tmp.replace(out)
    return {"zip": str(out), "bytes": out.stat().st_size, "models": len(models), "plugins": sorted(modules)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m submission.build", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m submission.build --run runs/demo --out submission/submission.zip")
    p.add_argument("--run", action="append", type=Path, default=[],
                   help="a run folder, CV folder or seeds folder (repeat for an ensemble)")
    p.add_argument("--weight", action="append", type=float, help="ensemble weight per --run, in order")
    p.add_argument("--ensemble", type=Path, help="members and weights chosen by tools.ensemble (instead of --run)")
    p.add_argument("--viewpoint-weights", help="JSON (or a file holding it): per scenario kind (top_top, top_lateral, "
                                               "lateral_top, ...) a weight per --run, e.g. '{\"lateral_top\": [1, 0]}'")
    p.add_argument("--out", type=Path, default=ROOT / "submission" / "submission.zip", help="zip to write")
    p.add_argument("--runtime", choices=RUNTIMES, default="2022", help="the runtime the bundle is for: the 2022 "
                   "competition's (default; checked against its packages) or this installation's (here: a step may use "
                   "packages the 2022 runtime lacks, such as local_match's learned detector xfeat)")
    args = p.parse_args(argv)
    try:
        if args.ensemble:
            if args.run or args.weight:
                raise BuildError("give --ensemble or --run/--weight, not both")
            args.run, args.weight = read_ensemble(args.ensemble)
        view = None
        if args.viewpoint_weights:
            text = Path(args.viewpoint_weights).read_text() if Path(args.viewpoint_weights).is_file() else args.viewpoint_weights
            try:
                view = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BuildError(f"--viewpoint-weights is not JSON: {exc}") from exc
        print(json.dumps(build(args.run, args.out, args.weight, view, runtime=args.runtime)))
    except BuildError as exc:
        p.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
