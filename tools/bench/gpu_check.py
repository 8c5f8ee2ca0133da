"""The GPU path in one command: the seed's and winners' recipes on this machine's GPU, timed, within a hard limit.

    python -m tools.bench.gpu_check --out runs/gpu_check [--time-limit 600]     # on a CUDA machine (make gpu-check)
    python -m tools.bench.gpu_check --dry --out DIR                              # the same steps on the CPU at tiny sizes

What it measures, stage by stage (each stage is skipped, and says so, when the time left cannot cover it):

1. ``env``: GPU name, memory and driver, torch, CUDA, cuDNN, timm and faiss versions, faiss GPU support.
2. ``recipes``: for every config under ``configs/seed_3rd_place/`` and ``configs/winners/``, the model built at
   the config's image size and batch size, ``--steps`` training steps through accelerate in the config's mixed
   precision (fp16) on random images, after one untimed warm-up step: images/s, peak GPU memory, whether every
   loss was finite. A projection of the recipe's full training (epochs x 5 folds x 5,902 photos, the
   competition's training set) from that speed.
3. ``multi_gpu``: with 2 or more GPUs, one evaluation of a small run with ``accelerate launch --multi_gpu
   --num_processes 2`` against one process: the mAP must be equal.
4. ``bundle``: the seed's three backbones (untrained) packed into one submission and run by ``main.py``
   (``submission.check``) on a competition-shaped synthetic test set (3,400 photos, 4,419 queries in 10
   scenarios, as the real test set): wall time, embedding and ranking time, peak memory, faiss on the GPU
   when faiss has GPU support.
5. ``catalogue``: the catalogue's embedding (``catalogue build``, ``identify``, ``reembed``) of the bundle stage's
   photos with the same bundle, on the GPU in half precision and on the CPU: photos/s each and the ratio.

Results go to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` after every stage, so a run stopped by its limit
keeps what it measured. Without ``--dry`` and without CUDA it stops at once. ``--dry`` runs every stage on
the CPU at 32 px, batch 2, one step, a 40-photo test set, each backbone swapped for the smallest timm model
of its family (convnext_atto, tf_efficientnet_b0, efficientnetv2_rw_t): under a minute, and it proves the
script still runs (the suite does this). Real runs take up to ``--time-limit`` seconds (default 600).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.bench.common import ROOT
TRAIN_PHOTOS = 5902  # the competition's training set (its metadata.csv)
TEST_IMAGES, TEST_QUERIES, TEST_SCENARIOS = 3400, 4419, 10  # the hidden test set's size, as its scenarios state
SEED = ("convnext_large", "tf_efficientnet_b5_ns", "tf_efficientnet_b7_ns")
# --dry: the smallest model of each family, so the CPU run exercises the same code in seconds
DRY_MODELS = (("convnext", "convnext_atto"), ("tf_efficientnet", "tf_efficientnet_b0"),
              ("efficientnetv2", "efficientnetv2_rw_t"), ("", "resnet18"))


def dry_overrides(cfg_model: str) -> list[str]:
    small = next(m for prefix, m in DRY_MODELS if str(cfg_model).startswith(prefix))
    return ["data.image_size=[32,32]", "train.batch_size=2", "infer.batch_size=8", f"backbone.model={small}"]


class OutOfTime(Exception):
    pass


def recipe_configs() -> list[Path]:
    return sorted(p for d in ("seed_3rd_place", "winners") for p in (ROOT / "configs" / d).rglob("*.yaml")
                  if p.name != "base.yaml")


class Check:
    """The running result: stages fill ``data``; every ``save`` rewrites the JSON and the Markdown table."""

    def __init__(self, out: Path, limit: float, dry: bool):
        self.out, self.dry, self.deadline, self.started = out, dry, time.time() + limit, time.time()
        self.data = {"dry": dry, "time_limit_s": limit, "stages": {}}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.time()

    def need(self, seconds: float, what: str) -> None:
        if self.left() < seconds:
            raise OutOfTime(f"{what} needs about {seconds:.0f} s; {self.left():.0f} s left")

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.started, 1)
        self.data["projections"] = projections(self.data)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2))
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def env_info(device) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": str(device), "gpus": torch.cuda.device_count()}
    for mod in ("timm", "faiss", "accelerate"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception:
            info["driver"] = None
        try:
            import faiss

            info["faiss_gpu"] = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        except Exception:
            info["faiss_gpu"] = False
    return info


def recipe_step(path: Path, dry: bool, steps: int) -> dict:
    """Build ``path``'s model and loss, run warm-up + ``steps`` training steps on random images."""
    import torch
    from accelerate import Accelerator

    from core.config import component, load_config
    from core.model import build_model
    from core.plugins import build_registries
    from core.training.loop import TrainStep, make_optimizer, parameter_groups

    cfg = load_config(path)
    if dry:
        cfg = load_config(path, dry_overrides(cfg.backbone.model))
    cfg.backbone.pretrained = False
    size, batch = [int(s) for s in cfg.data.image_size], int(cfg.train.batch_size)
    cuda = torch.cuda.is_available() and not dry
    precision = str(cfg.train.mixed_precision) if cuda else "no"
    accelerator = Accelerator(mixed_precision=precision, cpu=not cuda)
    registries = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])
    model = build_model(cfg, registries)
    classes = 64
    loss = registries["loss"].build(component(cfg, "loss"), optional={"class_counts": [4] * classes},
                                    embedding_size=model.embedding_size, num_classes=classes)
    trainer = TrainStep(model, loss)
    optimizer = make_optimizer(cfg.train, parameter_groups(trainer))
    trainer, optimizer = accelerator.prepare(trainer, optimizer)
    device = accelerator.device
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    losses, timed = [], 0.0
    trainer.train()
    for step in range(steps + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.time()
        with accelerator.autocast():
            value = trainer(images, labels)
        accelerator.backward(value)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(value.detach()))
        if cuda:
            torch.cuda.synchronize()
        if step > 0:  # the first step (cuDNN autotuning, allocation) is not timed
            timed += time.time() - t0
    speed = batch * steps / timed if timed > 0 else None
    result = {"config": str(path.relative_to(ROOT)), "model": cfg.backbone.get("model"), "image_size": size,
              "batch_size": batch, "precision": precision, "steps": steps, "images_per_s": round(speed, 2) if speed else None,
              "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
              "losses_finite": all(math.isfinite(v) for v in losses), "loss_first": round(losses[0], 4)}
    if speed:  # the full recipe: every epoch over 4/5 of the training photos, 5 folds
        seconds = int(cfg.train.epochs) * 5 * TRAIN_PHOTOS * 0.8 / speed
        result["projected_training_h"] = round(seconds / 3600, 2)
    del trainer, optimizer, model
    if cuda:
        torch.cuda.empty_cache()
    return result


def competition_shaped(out: Path, images: int, queries: int, scenarios: int, size=(96, 224)) -> Path:
    """A test folder in the competition's layout: ``images`` noise photos (92% top, the rest left/right),
    ``scenarios`` scenarios sharing ``queries`` queries, each database half the photos. Timing only: no labels."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "queries").mkdir(exist_ok=True)
    (out / "databases").mkdir(exist_ok=True)
    ids = [f"img{i:05d}" for i in range(images)]
    views = rng.choice(["top", "left", "right"], size=images, p=[0.92, 0.04, 0.04])
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out / "images" / f"{i}.jpg")
    pd.DataFrame({"image_id": ids, "path": [f"images/{i}.jpg" for i in ids], "height": size[1], "width": size[0],
                  "viewpoint": views, "date": "2019-06-01"}).to_csv(out / "metadata.csv", index=False)
    rows = []
    for s in range(scenarios):
        name = f"scenario{s + 1:02d}"
        n = queries // scenarios + (1 if s < queries % scenarios else 0)
        q = rng.choice(ids, size=n, replace=n > images)
        pd.DataFrame({"query_id": [f"{name}-{k}" for k in range(n)], "query_image_id": q}).to_csv(
            out / "queries" / f"{name}.csv", index=False)
        pd.DataFrame({"database_image_id": rng.choice(ids, size=images // 2, replace=False)}).to_csv(
            out / "databases" / f"{name}.csv", index=False)
        rows.append((name, f"queries/{name}.csv", f"databases/{name}.csv"))
    pd.DataFrame(rows, columns=["scenario_id", "queries_path", "database_path"]).to_csv(out / "query_scenarios.csv",
                                                                                         index=False)
    return out


def seed_bundle(work: Path, dry: bool) -> Path:
    """The seed's three backbones, untrained, as run folders packed into one zip."""
    from safetensors.torch import save_file

    from core.config import load_config, save_config
    from core.model import build_model
    from core.plugins import build_registries
    from submission.build import build

    runs = []
    for name in SEED:
        path = ROOT / "configs" / "seed_3rd_place" / f"{name}.yaml"
        cfg = load_config(path, ["backbone.pretrained=false"] + (dry_overrides(name) if dry else []))
        run = work / name
        run.mkdir(parents=True, exist_ok=True)
        model = build_model(cfg, build_registries(cfg.plugins))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "best.safetensors"))
        save_config(cfg, run / "config.yaml")
        runs.append(run)
    return Path(build(runs, work / "seed.zip")["zip"])


def bundle_stage(work: Path, dry: bool) -> dict:
    from submission.check import check

    zip_path = seed_bundle(work, dry)
    images, queries = (40, 60) if dry else (TEST_IMAGES, TEST_QUERIES)
    data = competition_shaped(work / "test", images, queries, TEST_SCENARIOS)
    result = check(zip_path, data, keep=True, runtime="here", timeout=3600)
    log = result.get("log_text", "")
    embed = [float(s) for s in re.findall(r"embedded \d+ images in ([\d.]+) s", log)]
    ranked = re.findall(r"ranked \d+ scenarios in ([\d.]+) s", log)
    return {"zip_mb": round(zip_path.stat().st_size / 2**20, 1), "images": images, "queries": queries,
            "problems": result["problems"], "format": result.get("format"), "wall_s": result.get("wall_seconds"),
            "embed_s_per_model": embed, "rank_s": float(ranked[0]) if ranked else None,
            "peak_memory_mb": result.get("peak_memory_mb"), "faiss_gpu_used": "faiss" in result.get("imports", [])
            and "cuda" in log}


def catalogue_stage(work: Path, dry: bool, device) -> dict:
    """The catalogue's embedding (``catalogue.embedding.embed.embed_files``, what ``catalogue build``, ``identify`` and
    ``reembed`` run) of the bundle stage's photos with the seed's bundle: photos/s on ``device`` and on the CPU."""
    import time

    from catalogue.embedding.embed import embed_files

    zip_path, photos = work / "seed.zip", sorted((work / "test" / "images").glob("*.jpg"))
    if not zip_path.is_file() or not photos:
        raise RuntimeError(f"{work}: the bundle stage's zip and photos are needed first")
    out = {"bundle": "the seed's 3 backbones", "device": str(device)}
    for name, dev, n in ((str(device), device, len(photos) if not dry else 16), ("cpu", "cpu", 16 if dry else 64)):
        files = [str(p) for p in photos[:n]]
        embed_files(zip_path, files[:2], 0, dev)  # warm-up: weights read, kernels chosen
        t = time.perf_counter()
        emb, ok = embed_files(zip_path, files, None, dev)
        took = time.perf_counter() - t
        out[f"{name}_photos"] = n
        out[f"{name}_photos_per_s"] = round(n / took, 2)
        out[f"{name}_all_read"] = bool(ok.all())
    if str(device) != "cpu":
        out["speedup_vs_cpu"] = round(out[f"{device}_photos_per_s"] / out["cpu_photos_per_s"], 1)
    import torch

    if not dry and torch.cuda.device_count() > 1:  # every GPU, each a share of the photos
        files = [str(p) for p in photos]
        t = time.perf_counter()
        embed_files(zip_path, files, None, "cuda")
        out["all_gpus"] = torch.cuda.device_count()
        out["all_gpus_photos_per_s"] = round(len(files) / (time.perf_counter() - t), 2)
    return out


def multi_gpu_stage(work: Path) -> dict:
    """One evaluation of a short run in 1 and in 2 processes (``accelerate launch --multi_gpu``)."""
    from tools.synthesize import synthesize

    survey = work / "tiny"
    synthesize("tiny", survey, seed=0, workers=2)
    args = ["--config", str(ROOT / "configs" / "smoke.yaml"), f"data.root={survey / 'train'}", "train.epochs=1"]
    out = {}
    for procs in (1, 2):
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "--num_processes", str(procs)] + (["--multi_gpu"] if procs == 2 else [])
        run = work / f"procs{procs}"
        subprocess.run(launch + [str(ROOT / "core" / "run.py")] + args + [f"output_dir={run}"], check=True,
                       capture_output=True, text=True, timeout=600)
        out[f"mAP_{procs}"] = json.loads((run / "metrics.json").read_text())["mAP"]
    out["equal"] = abs(out["mAP_1"] - out["mAP_2"]) < 1e-6
    return out


# the seed's own figures, from its report and logs in the drivendataorg/wheres-whale-do repository (3rd place)
SEED_REPORTED = {"training_h": 24.0, "training_hardware": "2x RTX 3090", "inference_s": 9471,
                 "inference_note": "about 3 h per the report; the log shows 9,471 s, ConvNeXt-L alone about 1 h 47 m"}


def projections(data: dict) -> dict:
    """The seed's full recipe (its three backbones, epochs x 5 folds) and its inference on the real test set,
    from this run's speeds, beside the seed's own figures."""
    rows = [r for r in data["stages"].get("recipes", []) if r["config"].startswith("configs/seed_3rd_place/")]
    out = {"seed_reported": SEED_REPORTED}
    if rows and all(r.get("projected_training_h") for r in rows):
        out["seed_training_h_one_gpu"] = round(sum(r["projected_training_h"] for r in rows), 1)
    bundle = data["stages"].get("bundle")
    if bundle and bundle.get("wall_s") is not None:
        out["seed_inference_s"] = bundle["wall_s"]  # the bundle stage runs the real test set's size
    return out


def markdown(data: dict) -> str:
    lines = [f"# GPU check{' (dry run on the CPU)' if data['dry'] else ''}", ""]
    env = data["stages"].get("env", {})
    if env:
        lines += ["| " + " | ".join(env) + " |", "|" + "---|" * len(env), "| " + " | ".join(str(v) for v in env.values()) + " |", ""]
    recipes = data["stages"].get("recipes", [])
    if recipes:
        lines += ["| config | image | batch | precision | images/s | peak GiB | loss finite | projected training h |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['config']} | {r.get('image_size')} | {r.get('batch_size')} | {r.get('precision')} | "
                  f"{r.get('images_per_s')} | {r.get('peak_gpu_memory_gib')} | {r.get('losses_finite')} | "
                  f"{r.get('projected_training_h')} |" if "error" not in r else f"| {r['config']} | error: {r['error']} |"
                  for r in recipes]
        lines.append("")
    for stage in ("multi_gpu", "bundle", "catalogue"):
        if stage in data["stages"]:
            lines += [f"**{stage}**: `{json.dumps(data['stages'][stage])}`", ""]
    proj = projections(data)
    ref = proj["seed_reported"]
    lines += [f"**projections{' (dry: tiny sizes, not meaningful)' if data['dry'] else ''}**: the seed's full "
              f"training (3 backbones x epochs x 5 folds) {proj.get('seed_training_h_one_gpu', 'n/a')} h on this one "
              f"GPU (the seed: {ref['training_h']} h on {ref['training_hardware']}); the seed's inference on a "
              f"test set of the real size {proj.get('seed_inference_s', 'n/a')} s (the seed: {ref['inference_note']}).", ""]
    for what, why in data.get("skipped", {}).items():
        lines.append(f"- skipped {what}: {why}")
    lines.append(f"\nelapsed {data.get('elapsed_s')} s of a {data['time_limit_s']:.0f} s limit")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.gpu_check", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check", help="folder for gpu_check.json/.md")
    p.add_argument("--dry", action="store_true", help="run every stage on the CPU at tiny sizes (the suite's check)")
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds for the whole check (default 600)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per recipe (default 5; dry: 1)")
    p.add_argument("--stages", nargs="+", default=["env", "recipes", "multi_gpu", "bundle", "catalogue"],
                   choices=["env", "recipes", "multi_gpu", "bundle", "catalogue"],
                   help="which stages to run (default: all; catalogue needs bundle's files)")
    args = p.parse_args(argv)
    import torch

    if not args.dry and not torch.cuda.is_available():
        p.exit(2, "error: no CUDA device here; run with --dry to exercise the check on the CPU\n")
    check = Check(args.out, args.time_limit, args.dry)
    steps = args.steps or (1 if args.dry else 5)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry else "cpu")
    # the hard limit: an alarm a little after the deadline stops whatever runs, keeping what was saved
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(OutOfTime("hard time limit reached")))
    signal.alarm(int(args.time_limit) + 5)
    skipped = check.data.setdefault("skipped", {})
    try:
        if "env" in args.stages:
            check.data["stages"]["env"] = env_info(device)
            check.save()
            print(json.dumps(check.data["stages"]["env"]), file=sys.stderr)
        if "recipes" in args.stages:
            check.data["stages"]["recipes"] = []
            for path in recipe_configs():
                name = str(path.relative_to(ROOT))
                try:
                    check.need(20 if args.dry else 30, name)
                    row = recipe_step(path, args.dry, steps)
                except OutOfTime as exc:
                    skipped[name] = str(exc)
                    continue
                except Exception as exc:  # one recipe failing (out of memory, say) is a result, not the end
                    row = {"config": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
                check.data["stages"]["recipes"].append(row)
                check.save()
                print(json.dumps(row), file=sys.stderr)
        work = args.out / "work"
        if "multi_gpu" in args.stages:
            if torch.cuda.device_count() < 2 or args.dry:
                skipped["multi_gpu"] = f"{torch.cuda.device_count()} GPU(s); needs 2"
            else:
                check.need(120, "multi_gpu")
                check.data["stages"]["multi_gpu"] = multi_gpu_stage(work / "multi")
            check.save()
        if "bundle" in args.stages:
            check.need(30 if args.dry else 120, "bundle")
            check.data["stages"]["bundle"] = bundle_stage(work / "bundle", args.dry)
            check.save()
        if "catalogue" in args.stages:
            check.need(20 if args.dry else 90, "catalogue")
            check.data["stages"]["catalogue"] = catalogue_stage(work / "bundle", args.dry, device)
            check.save()
    except OutOfTime as exc:
        skipped["rest"] = str(exc)
    finally:
        signal.alarm(0)
        check.save()
    print(markdown(check.data))
    failed = [r for r in check.data["stages"].get("recipes", []) if "error" in r or not r.get("losses_finite", True)]
    bundle = check.data["stages"].get("bundle")
    return 1 if failed or (bundle and bundle["problems"]) else 0


if __name__ == "__main__":
    sys.exit(main())
