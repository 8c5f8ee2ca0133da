"""Check a submission the way the runtime does.

    python -m submission.check submission/submission.zip --data DIR [--labels labels.csv] [--runtime 2022|here]

Unzips into a fresh temporary root laid out like ``/code_execution`` (``data`` linked to DIR),
runs ``python main.py`` there in a subprocess with a clean environment, records which modules the
bundle's own code imports, validates the output format, and prints JSON: wall time, peak memory
and, with labels, the competition mAP overall and per scenario beside a random ranking's. Exits non-zero when a rule breaks.

``--runtime 2022`` runs ``main.py`` with the 2022 runtime twin's interpreter (Python 3.9, torch 1.8,
timm 0.5.4: ``make runtime-twin``); ``--runtime here`` with this project's own interpreter, which proves
less. The default takes the twin when it is built. The output's ``runtime`` says which ran, with versions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from core.bundle import BundleError, problems, unpack
from core.bundle import made_for as bundle_made_for
from submission.runtime import MODULES as RUNTIME_MODULES  # what the 2022 runtime offered, by top-level module

# Runs main.py while recording every top-level module that a file inside the bundle imports.
TRACER = r"""
import builtins, json, linecache, os, re, runpy, sys
root = os.path.realpath(os.getcwd())
seen = set()
real_import = builtins.__import__
IMPORT_LINE = re.compile(r"^\s*(import|from)\s")
def bundle_import_statement(frame):
    # a bundle file executing an import statement (not a C extension importing while a bundle frame is on top)
    name = frame.f_code.co_filename
    return (os.path.realpath(name).startswith(root + os.sep)
            and bool(IMPORT_LINE.match(linecache.getline(name, frame.f_lineno))))
def traced(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and bundle_import_statement(sys._getframe(1)):
        seen.add(name.split(".")[0])
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = traced
import importlib
real_import_module = importlib.import_module
def traced_import_module(name, package=None):
    caller = sys._getframe(1).f_code.co_filename
    if not name.startswith(".") and os.path.realpath(caller).startswith(root + os.sep):
        seen.add(name.split(".")[0])
    return real_import_module(name, package)
importlib.import_module = traced_import_module
code = 0
try:
    sys.argv = ["main.py"]
    runpy.run_path("main.py", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
finally:
    import resource
    with open(os.environ["WHALEID_IMPORT_LOG"], "w") as fh:
        json.dump({"imports": sorted(seen),
                   "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "workers_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, fh)
sys.exit(code)
"""


MIN_LIFT = 1.5  # below this many times a random ranking's mAP, the check warns


def lift_report(mAP: float, random_mAP: float) -> dict:
    """``{"lift": mAP / random mAP, "warnings": [...]}``; warns when the lift is under ``MIN_LIFT``."""
    lift = round(mAP / random_mAP, 3) if random_mAP > 0 else None
    warnings = []
    if lift is not None and lift < MIN_LIFT:
        warnings.append(f"mAP {mAP:.4f} is only {lift:.2f}x a random ranking's {random_mAP:.4f} (under {MIN_LIFT}x): "
                        "the models barely beat chance on these whales; check the run's metrics.json warnings")
    return {"lift": lift, "warnings": warnings}


class RuntimeUnavailable(RuntimeError):
    pass


def interpreter(runtime: str) -> tuple[str, str]:
    """(python executable, what it is) for ``runtime``: "2022" (the twin), "here" (this interpreter) or
    "auto" (the twin when built, else here)."""
    from submission.runtime import twin_python

    if runtime not in ("2022", "here", "auto"):
        raise ValueError(f"runtime must be 2022, here or auto, got {runtime!r}")
    twin = twin_python() if runtime in ("2022", "auto") else None
    if twin:
        return str(twin), "2022 runtime twin"
    if runtime == "2022":
        raise RuntimeUnavailable("the 2022 runtime twin is not built (or is older than submission/runtime-2022.txt); "
                                 "build it with `make runtime-twin`")
    return sys.executable, "this project's interpreter, not the 2022 runtime's packages"


def check(zip_path: Path, data: Path, labels: Path | None = None, timeout: int = 3600, keep: bool = False,
          runtime: str = "auto", save_embeddings: Path | None = None) -> dict:
    from core.metric import random_baseline, score_scenarios
    from core.metric import SubmissionFormatError, validate_predictions
    from core.scenarios import read_scenarios

    from submission.runtime import describe

    data = data.resolve()
    made_for = bundle_made_for(zip_path)
    if made_for == "here" and runtime == "auto":  # packed for this installation: the twin cannot run it
        runtime = "here"
    python, label = interpreter(runtime)
    result: dict = {"zip": str(zip_path), "problems": [], "runtime": {"name": label, **describe(python)}}
    if made_for == "here" and runtime == "2022":
        result["problems"].append(f"{zip_path} was packed for this installation (submission.build --runtime here), "
                                  "not for the 2022 runtime: check it with --runtime here")
        result["refused"] = True
        return result
    with tempfile.TemporaryDirectory(prefix="code_execution_") as tmp:
        root = Path(tmp) / "code_execution"
        (root / "submission").mkdir(parents=True)
        try:
            result["problems"] += unpack(zip_path, root)
        except BundleError as exc:  # refused: nothing is extracted or run
            result["problems"] += problems(zip_path) or [str(exc)]
            result["refused"] = True
            return result
        (root / "data").symlink_to(data, target_is_directory=True)
        out_csv = root / "submission" / "submission.csv"
        import_log = Path(tmp) / "imports.json"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "LANG": "C.UTF-8",
               "WHALEID_DATA_ROOT": str(root / "data"), "WHALEID_OUTPUT": str(out_csv),
               "WHALEID_IMPORT_LOG": str(import_log), "PYTHONNOUSERSITE": "1"}
        if save_embeddings:
            env["WHALEID_SAVE_EMBEDDINGS"] = str(Path(save_embeddings).resolve())
        for var in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
            if var in os.environ:
                env[var] = os.environ[var]
        started = time.time()
        proc = subprocess.run([python, "-c", TRACER], cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        result["wall_seconds"] = round(time.time() - started, 2)
        result["exit_code"] = proc.returncode
        result["log_tail"] = proc.stderr.strip().splitlines()[-8:]
        if keep:
            result["log_text"] = proc.stderr
        if proc.returncode != 0:
            result["problems"].append(f"main.py exited with {proc.returncode}")
        trace = json.loads(import_log.read_text()) if import_log.exists() else {"imports": []}
        imported = set(trace["imports"])
        if "maxrss_kb" in trace:  # peak resident memory of main.py itself, and of its largest loader worker
            result["peak_memory_mb"] = round(trace["maxrss_kb"] / 1024, 1)
            result["peak_worker_memory_mb"] = round(trace["workers_maxrss_kb"] / 1024, 1)
        own = {p.name for p in root.iterdir() if p.is_dir() or p.suffix == ".py"} | {"main"}
        foreign = sorted(imported - set(sys.stdlib_module_names) - RUNTIME_MODULES - own)
        result["imports"] = sorted(imported - set(sys.stdlib_module_names))
        if foreign and made_for == "2022":  # a bundle packed for this installation may import what it has
            result["problems"].append(f"bundle imports modules outside its files and the runtime set: {foreign}")
        if not out_csv.is_file():
            result["problems"].append("no submission/submission.csv written")
            return result
        predictions = pd.read_csv(out_csv, dtype={"query_id": str, "database_image_id": str})
        try:
            scenarios = read_scenarios(data, skip_broken=True)
        except Exception as exc:
            result["problems"].append(f"cannot read the scenarios: {exc}")
            scenarios = []
        query_map = {q: i for sc in scenarios for q, i in zip(sc.queries["query_id"], sc.queries["query_image_id"])}
        result["rows"] = len(predictions)
        result["queries_missing"] = len(set(query_map) - set(predictions["query_id"]))
        try:
            validate_predictions(predictions, query_map)
            result["format"] = "valid"
        except SubmissionFormatError as exc:
            result["format"] = "invalid"
            result["problems"].append(f"format: {exc}")
        if labels is not None and result["format"] == "valid":
            truth = pd.read_csv(labels, dtype=str)
            # random: the mean of 20 random rankings, the expected score of chance
            for prefix, scored in (("", score_scenarios(predictions, scenarios, truth)),
                                   ("random_", random_baseline(scenarios, labels=truth))):
                result[f"{prefix}mAP"] = round(scored["mAP"], 4)
                result[f"{prefix}scenarios"] = {k: round(v, 4) for k, v in scored["scenarios"].items()}
            result.update(lift_report(result["mAP"], result["random_mAP"]))
        if keep:
            kept = Path(tempfile.mkdtemp(prefix="whaleid_check_")) / "submission.csv"
            kept.write_bytes(out_csv.read_bytes())
            result["submission_csv"] = str(kept)
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m submission.check", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m submission.check submission/submission.zip "
                                       "--data data/synthetic/small/test --labels data/synthetic/small/test_labels.csv")
    p.add_argument("zip", type=Path, help="the submission zip")
    p.add_argument("--data", type=Path, required=True, help="a folder laid out like /code_execution/data")
    p.add_argument("--labels", type=Path, help="true matches (query_id, database_image_id) to score against")
    p.add_argument("--timeout", type=int, default=3600, help="seconds main.py may run (default 3600)")
    p.add_argument("--keep", action="store_true", help="keep a copy of the submission.csv written, and the whole log")
    p.add_argument("--save-embeddings", type=Path, metavar="FILE.npz",
                   help="keep every model's embeddings of the test images (image_ids, ok, model0, model1, ...)")
    p.add_argument("--runtime", choices=("2022", "here", "auto"), default="auto",
                   help="run main.py with the 2022 runtime twin (2022; build it with `make runtime-twin`), with this "
                        "project's interpreter (here), or with the twin when it is built (auto, the default)")
    args = p.parse_args(argv)
    for path in (args.zip, args.data):
        if not path.exists():
            p.error(f"not found: {path}")
    try:
        result = check(args.zip, args.data, args.labels, args.timeout, args.keep, args.runtime, args.save_embeddings)
    except RuntimeUnavailable as exc:
        p.exit(2, f"error: {exc}\n")
    print(json.dumps(result, indent=2))
    print(f"ran main.py with {result['runtime']['name']}: python {result['runtime']['python_version']}, "
          + ", ".join(f"{k} {v}" for k, v in result["runtime"]["packages"].items() if v), file=sys.stderr)
    for warning in result.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    if result.get("lift") is not None:
        print(f"mAP {result['mAP']:.4f}, random {result['random_mAP']:.4f}, lift {result['lift']:.2f}x", file=sys.stderr)
    sys.exit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
