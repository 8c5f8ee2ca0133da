"""The whaleid runner: ``accelerate launch core/run.py --config configs/X.yaml [key=value ...]``.

Reads the config, loads the plugins, splits the data, trains with the config's recipe, evaluates
with the competition metric every ``train.eval_every`` epochs, and keeps the best and last weights.
Writes into ``output_dir``: ``config.yaml`` (resolved), ``split.csv`` (each image's role, train or
val, and its class index), ``metrics.json`` (the best evaluation, its ``lift`` over a random ranking
and the run's ``warnings``), ``history.jsonl`` (one line per evaluation), ``best.safetensors``,
``last.safetensors`` and ``checkpoint/`` (model, optimizer, scheduler and RNG state, for ``resume=true``).

The best evaluation also leaves ``oof.npz`` (the validation images' ids and embeddings) and
``per_query.csv`` (query_id, scenario, ap), which ``tools.compare`` and ``tools.ensemble`` read.

After three evaluations the run checks that it is learning (``core.health``) and warns, in the log
and in ``metrics.json``, with a hint, when it is not.

``data.fold=all`` (or a list such as ``data.fold=[0,2]``) trains one run per fold into
``output_dir/fold<k>/`` and writes ``output_dir/cv.json`` (out-of-fold mAP over every validation query
of every fold, per scenario, per fold with mean and s.d., and the random baseline on the same queries).
``seeds=[0,1,2]`` repeats the run (or the folds) per seed into ``output_dir/seed<s>/`` and writes
``seeds.json`` (mean, s.d., min and max). With ``resume=true`` finished runs are skipped and an
unfinished one resumes from its checkpoint. Training order and augmentations are functions of
(seed, epoch, sample) (``core.sampling``), so a resumed run matches an uninterrupted one with loader workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable, not core/
    _root = str(Path(__file__).resolve().parent.parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, _root)

import torch
from torch.utils.data import DataLoader

from core.config import component, fold_list, load_config, save_config
from core.evaluate import evaluate, random_baseline
from core.health import learning_warnings, lift
from core.logs import setup_logging
from core.model import build_model, load_weights
from core.plugins import build_registries
from core.progress import progress
from core.retrieval import build_steps
from core.sampling import EpochSampler, SeededSamples
from core.scenarios import build_scenarios
from core.runs import spread_of

log = logging.getLogger("whaleid")


class TrainStep(torch.nn.Module):
    """Model and loss head in one module, so one DDP wrapper covers every trained parameter."""

    def __init__(self, model, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, images, labels):
        return self.loss(self.model(images), labels)


def freeze_unused_parameters(trainer: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """Freeze parameters that get no gradient from a real batch, and return their names.

    A component may own parameters that a given combination never uses (GeM's p when the backbone
    already pools); DDP refuses those. One forward/backward in eval mode finds them without touching
    BatchNorm statistics or dropout state.
    """
    was_training = trainer.training
    trainer.eval()
    trainer.zero_grad(set_to_none=True)
    trainer(images, labels).backward()
    unused = [n for n, p in trainer.named_parameters() if p.requires_grad and p.grad is None]
    for name, param in trainer.named_parameters():
        if name in unused:
            param.requires_grad_(False)
    trainer.zero_grad(set_to_none=True)
    trainer.train(was_training)
    return unused


def lr_lambda(epochs: int, steps_per_epoch: int, warmup_epochs: float, warmup_factor: float, lr: float, min_lr: float):
    """Multiplier of the base lr per step: linear warm-up from 1 to ``warmup_factor``, then cosine to ``min_lr``
    (relative to ``lr``; parameter groups with their own base lr follow the same curve)."""
    warm = int(warmup_epochs * steps_per_epoch)
    total = max(1, epochs * steps_per_epoch)
    peak = warmup_factor if warm > 0 else 1.0
    floor = min_lr / lr

    def f(step: int) -> float:
        if step < warm:
            return 1.0 + (warmup_factor - 1.0) * step / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def train_epoch(trainer, loader, optimizer, scheduler, accelerator, max_steps: int, grad_clip=None,
                desc: str = "train", log_every: int | None = None) -> tuple[float, int]:
    """One pass of at most ``max_steps`` batches; returns (mean loss, steps taken). Progress: a bar on a
    terminal, else a plain line every ``log_every`` steps (``core.progress``)."""
    trainer.train()
    total, count = torch.zeros(()), 0  # summed on the device: no host sync per step
    bar = progress(loader, total=max_steps, desc=desc, unit="batch", every=log_every,
                   enabled=accelerator.is_local_main_process)
    for step, (images, labels) in enumerate(bar):
        if step >= max_steps:
            break
        with accelerator.autocast():
            loss_value = trainer(images, labels)
        accelerator.backward(loss_value)
        if grad_clip:
            accelerator.clip_grad_norm_(trainer.parameters(), float(grad_clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total, count = total.to(loss_value.device) + loss_value.detach(), count + 1
        if (count % 10 == 0 or count == max_steps) and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{float(total) / count:.3f}")
    return float(total) / max(count, 1), count


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="core/run.py",
        description="Train and evaluate a whale re-identification model. "
                    "Launch with `accelerate launch core/run.py --config configs/X.yaml [key=value ...]`.",
        epilog="Examples: output_dir=runs/a data.root=DIR train.epochs=5 resume=true eval_only=true weights=W",
    )
    p.add_argument("--config", help="YAML config file (may `extends:` a base)")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (omegaconf dotlist)")
    return p.parse_args(argv)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def warn_idle_cores(accelerator) -> None:
    """`accelerate launch` gives each process one CPU thread unless told otherwise: say so when cores idle."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    used = accelerator.num_processes * torch.get_num_threads()
    if accelerator.device.type == "cpu" and used < cores:
        log.warning("training on %d of %d CPU cores (%d process(es) x %d thread(s)); `accelerate launch` sets one "
                    "thread per process unless given --num_cpu_threads_per_process", used, cores,
                    accelerator.num_processes, torch.get_num_threads())


def make_optimizer(train_cfg, params) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params``: a list of tensors, or of ``(group name, tensors)`` pairs whose
    base learning rate ``train.group_lr.<name>`` gives when set (else ``train.lr``)."""
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if train_cfg.optimizer not in kinds:
        raise ValueError(f"train.optimizer must be one of {', '.join(kinds)}, got {train_cfg.optimizer!r}")
    group_lr = dict(train_cfg.get("group_lr") or {})
    if params and isinstance(params[0], tuple):
        unknown = set(group_lr) - {name for name, _ in params}
        if unknown:
            raise ValueError(f"train.group_lr names {sorted(unknown)}; the groups are {[n for n, _ in params]}")
        params = [{"params": ps, "lr": float(group_lr.get(name, train_cfg.lr)), "name": name} for name, ps in params if ps]
    return kinds[train_cfg.optimizer](params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)


def parameter_groups(trainer) -> list[tuple[str, list]]:
    """Trainable parameters as (backbone | neck | head) groups: ``train.group_lr`` sets each group's lr."""
    groups = {"backbone": [], "neck": [], "head": []}
    for name, p in trainer.named_parameters():
        if p.requires_grad:
            key = "backbone" if name.startswith("model.backbone.") else "neck" if name.startswith("model.neck.") else "head"
            groups[key].append(p)
    return list(groups.items())


def find_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder under ``out``: ``checkpoint``, or ``checkpoint.old`` /
    ``checkpoint.tmp`` left by a crash mid-swap. Complete means its ``state.json``, written last, is there
    and parses."""
    best, best_epoch = None, -1
    for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
        marker = out / name / "state.json"
        try:
            epoch = int(json.loads(marker.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if epoch > best_epoch:
            best, best_epoch = out / name, epoch
    return best


def resume_state(accelerator, out: Path, resume: bool) -> dict:
    """The run's progress: restored from the newest complete checkpoint with ``resume``, else a fresh start."""
    state = {"epoch": 0, "best_mAP": -1.0}
    ckpt = find_checkpoint(out) if resume else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "state.json").read_text())
        log.info("resumed from %s at epoch %d", ckpt, state["epoch"])
    elif resume:
        log.warning("resume=true but %s holds no complete checkpoint; starting afresh", out)
    if accelerator.is_main_process and (out / "history.jsonl").exists():
        if state["epoch"] == 0:
            (out / "history.jsonl").unlink()  # a fresh run's history starts empty, not after an old run's
        else:  # a crash after an evaluation was logged but before its checkpoint: that epoch runs again
            kept = [h for h in read_history(out) if int(h.get("epoch", 0)) <= int(state["epoch"])]
            tmp = out / "history.jsonl.tmp"
            tmp.write_text("".join(json.dumps(h) + "\n" for h in kept))
            os.replace(tmp, out / "history.jsonl")
    return state


def save_checkpoint(accelerator, out: Path, state: dict, model) -> None:
    """Everything needed to resume, and ``last.safetensors``. The new checkpoint is written to
    ``checkpoint.tmp`` and completed by its ``state.json``; then ``checkpoint`` becomes ``checkpoint.old``,
    the new one becomes ``checkpoint`` and the old one is deleted. At every instant one complete checkpoint
    is on disk, and ``find_checkpoint`` picks the newest; a failed write (a full disk) leaves the previous one."""
    accelerator.wait_for_everyone()
    tmp, ckpt, old = out / "checkpoint.tmp", out / "checkpoint", out / "checkpoint.old"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # an incomplete write of an earlier crash
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            _save_weights(model, out / "last.safetensors")  # before the marker: a complete checkpoint has its weights
            _write_json(tmp / "state.json", state)  # the completion marker, last
    except OSError as exc:
        kept = find_checkpoint(out)
        raise OSError(exc.errno, f"cannot write the checkpoint of epoch {state.get('epoch')} to {tmp} ({exc.strerror or exc}); "
                      + (f"the previous one, {kept}, is kept: free space and rerun with resume=true" if kept else
                         "no earlier checkpoint exists")) from exc
    if accelerator.is_main_process:
        if ckpt.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(ckpt, old)
        os.replace(tmp, ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def finished(out: Path, epochs: int) -> bool:
    """A run folder whose training reached ``epochs`` and whose best evaluation was saved."""
    if not ((out / "metrics.json").is_file() and (out / "per_query.csv").is_file()):
        return False
    ckpt = find_checkpoint(out)
    return ckpt is not None and int(json.loads((ckpt / "state.json").read_text()).get("epoch", 0)) >= epochs


def main(argv=None) -> dict:
    """Parse the command line and run: one fold, several folds (``data.fold``), several seeds (``seeds``)."""
    from accelerate import PartialState

    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    # Without a GPU, accelerate forms a gloo group only when told it runs on the CPU; otherwise
    # `accelerate launch --multi_gpu --num_processes 2` on a CPU machine runs two unrelated processes.
    setup_logging(PartialState(cpu=not torch.cuda.is_available()).is_main_process)
    return run_config(cfg)


def run_config(cfg) -> dict:
    if cfg.seeds is not None:
        return run_seeds(cfg)
    if fold_list(cfg) is not None:
        return run_folds(cfg)
    return train_one(cfg)


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _child(cfg, output_dir: Path, **changes):
    from omegaconf import OmegaConf

    child = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    child.output_dir = str(output_dir)
    for key, value in changes.items():
        OmegaConf.update(child, key, value, merge=False)
    return child


def run_folds(cfg) -> dict:
    """Train ``data.fold``'s folds one after another into ``output_dir/fold<k>/``; write ``cv.json``."""
    parent, folds = Path(cfg.output_dir), fold_list(cfg)
    if _is_main():
        parent.mkdir(parents=True, exist_ok=True)
        save_config(cfg, parent / "config.yaml")
    for k in folds:
        out = parent / f"fold{k}"
        if cfg.resume and finished(out, int(cfg.train.epochs)):
            log.info("fold %d already finished in %s; skipped", k, out)
            continue
        log.info("fold %d of %s: training into %s", k, folds, out)
        train_one(_child(cfg, out, **{"data.fold": k}))
    from accelerate import PartialState

    PartialState().wait_for_everyone()
    cv = cross_validation(parent, [parent / f"fold{k}" for k in folds])
    if _is_main():
        _write_json(parent / "cv.json", cv)
        log.info("cross-validation over folds %s: OOF mAP %.4f (random %.4f); per fold %s, mean %.4f +- %.4f | %s",
                 folds, cv["oof_mAP"], cv["random"]["mAP"], ", ".join(f"{v:.4f}" for v in cv["fold_mAP"]),
                 cv["fold_mean"], cv["fold_std"], " ".join(f"{k} {v:.3f}" for k, v in cv["oof_scenarios"].items()))
    return cv


def cross_validation(parent: Path, runs: list[Path]) -> dict:
    """Out-of-fold scores of fold runs: every validation query of every fold scored once (its fold's best
    evaluation); the random baseline on the same queries, weighted by each fold's query counts."""
    import pandas as pd

    tables, fold_maps, rand_total, rand_scen, counts = [], [], 0.0, {}, {}
    for run in runs:
        per_query = pd.read_csv(run / "per_query.csv", dtype={"query_id": str, "scenario": str})
        metrics = json.loads((run / "metrics.json").read_text())
        tables.append(per_query.assign(run=run.name))
        fold_maps.append(float(metrics["mAP"]))
        rand_total += float(metrics["random"]["mAP"]) * len(per_query)
        for name, n in per_query.groupby("scenario").size().items():
            rand_scen[name] = rand_scen.get(name, 0.0) + float(metrics["random"]["scenarios"].get(name, 0.0)) * n
            counts[name] = counts.get(name, 0) + int(n)
    allq = pd.concat(tables, ignore_index=True)
    spread = spread_of(fold_maps)
    return {
        "folds": [r.name for r in runs], "queries": int(len(allq)),
        "oof_mAP": float(allq["ap"].mean()),
        "oof_scenarios": {k: float(v) for k, v in allq.groupby("scenario")["ap"].mean().items()},
        "fold_mAP": fold_maps, "fold_mean": spread["mean"], "fold_std": spread["std"],
        "random": {"mAP": rand_total / max(1, len(allq)),
                   "scenarios": {k: rand_scen[k] / counts[k] for k in sorted(rand_scen)}},
        "best_epochs": [json.loads((r / "metrics.json").read_text()).get("epoch") for r in runs],
    }


def run_seeds(cfg) -> dict:
    """One run (or one set of folds) per seed into ``output_dir/seed<s>/``; ``seeds.json`` holds the spread."""
    parent, seeds = Path(cfg.output_dir), list(cfg.seeds)
    if _is_main():
        parent.mkdir(parents=True, exist_ok=True)
        save_config(cfg, parent / "config.yaml")
    results = {}
    for s in seeds:
        out = parent / f"seed{s}"
        child = _child(cfg, out, seed=int(s), seeds=None)
        log.info("seed %d of %s: into %s", s, seeds, out)
        if fold_list(child) is None and cfg.resume and finished(out, int(cfg.train.epochs)):
            log.info("seed %d already finished in %s; skipped", s, out)
            results[s] = json.loads((out / "metrics.json").read_text())
            continue
        results[s] = run_config(child)
    key = "oof_mAP" if fold_list(cfg) is not None else "mAP"
    values = [float(results[s][key]) for s in seeds]
    summary = {"seeds": seeds, "metric": key, "values": values, **spread_of(values),
               "runs": [f"seed{s}" for s in seeds]}
    if _is_main():
        _write_json(parent / "seeds.json", summary)
        log.info("over seeds %s: %s %.4f +- %.4f (min %.4f, max %.4f)", seeds, key, summary["mean"], summary["std"],
                 summary["min"], summary["max"])
    return summary


def train_one(cfg) -> dict:
    """Train and evaluate one fold with one seed into ``cfg.output_dir``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    log_with = list(cfg.log_with) or None
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available(),
                              log_with=log_with, project_dir=str(cfg.output_dir) if log_with else None)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    set_seed(int(cfg.seed))
    warn_idle_cores(accelerator)

    registries = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])
    data = registries["dataset"].build(component(cfg, "dataset"), root=cfg.data.root, image_size=list(cfg.data.image_size))
    data.rotate_landscape = bool(cfg.data.rotate_landscape)
    train_df, val_df = data.split(int(cfg.data.num_folds), int(cfg.data.fold), bool(cfg.data.holdout_whales),
                                  int(cfg.data.fold_seed))
    scenarios = build_scenarios(val_df)
    if not scenarios:
        raise ValueError(f"fold {cfg.data.fold} of {cfg.data.root} yields no validation scenario with a true match; "
                         "use more data or fewer folds")
    classes = sorted(train_df["whale_id"].unique())
    class_of = {w: i for i, w in enumerate(classes)}
    if accelerator.is_main_process:
        write_split(out / "split.csv", train_df, val_df, class_of)
    log.info("data %s: %d train images of %d whales, %d validation images; scenarios: %s", cfg.data.root,
             len(train_df), len(classes), len(val_df), ", ".join(f"{s.name} ({len(s.queries)} q)" for s in scenarios))

    model = build_model(cfg, registries)
    if cfg.weights:
        load_weights(model, cfg.weights)
    steps = build_steps(cfg.postprocess, registries["postprocess"])
    val_loader = DataLoader(data.eval_dataset(val_df), batch_size=int(cfg.infer.batch_size), shuffle=False,
                            num_workers=int(cfg.data.num_workers))
    image_ids = list(val_df["image_id"])
    viewpoints = dict(zip(val_df["image_id"], val_df["viewpoint"])) if "viewpoint" in val_df.columns else None

    # evaluate in the precision the model trains in (autocast on accelerators only; CPU stays float32)
    eval_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.mixed_precision)
    if accelerator.device.type == "cpu":
        eval_dtype = None

    def run_eval(epoch: int):
        result, per_query, emb = evaluate(
            accelerator.unwrap_model(model_ref), val_loader, image_ids, scenarios, steps, accelerator.device,
            bool(cfg.infer.tta_flip), gather=accelerator.gather_for_metrics, progress=accelerator.is_local_main_process,
            autocast_dtype=eval_dtype, details=True, viewpoints=viewpoints)
        result.update(epoch=epoch, num_processes=accelerator.num_processes)
        return result, per_query, emb

    baseline = random_baseline(scenarios, int(cfg.seed))

    def with_baseline(result: dict) -> dict:
        result["random"] = baseline
        result["lift"] = lift(result["mAP"], baseline["mAP"])
        return result

    if cfg.eval_only:
        model_ref = model.to(accelerator.device)
        val_loader = accelerator.prepare(val_loader)
        result, per_query, emb = run_eval(0)
        result = with_baseline(result)
        if accelerator.is_main_process:
            _write_json(out / "metrics.json", result)
            save_oof(out, image_ids, emb, per_query)
            log.info("eval mAP %.4f (random %.4f, lift %s) %s", result["mAP"], baseline["mAP"],
                     _fmt_lift(result["lift"]), result["scenarios"])
        return result

    counts = train_df["whale_id"].value_counts()
    loss = registries["loss"].build(component(cfg, "loss"), optional={"class_counts": [int(counts[w]) for w in classes]},
                                    embedding_size=model.embedding_size, num_classes=len(classes))
    trainer = TrainStep(model, loss)
    train_set = SeededSamples(data.train_dataset(train_df, [class_of[w] for w in train_df["whale_id"]]), int(cfg.seed))
    sampler = EpochSampler(len(train_set), int(cfg.seed))
    train_loader = DataLoader(train_set, batch_size=int(cfg.train.batch_size), sampler=sampler, drop_last=True,
                              num_workers=int(cfg.data.num_workers), persistent_workers=int(cfg.data.num_workers) > 0)
    probe = [train_set.dataset[i] for i in range(min(2, len(train_set)))]
    unused = freeze_unused_parameters(trainer, torch.stack([x for x, _ in probe]), torch.tensor([y for _, y in probe]))
    if unused:
        log.info("frozen, as this combination of components never uses them: %s", ", ".join(unused))
    optimizer = make_optimizer(cfg.train, parameter_groups(trainer))
    trainer, optimizer, train_loader, val_loader = accelerator.prepare(trainer, optimizer, train_loader, val_loader)
    steps_per_epoch = len(train_loader)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(cfg.train.max_steps_per_epoch))
    if steps_per_epoch == 0:
        raise ValueError(f"training set has {len(train_df)} images, fewer than one batch of {cfg.train.batch_size} per process")
    epochs = int(cfg.train.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        epochs, steps_per_epoch, cfg.train.warmup_epochs, cfg.train.warmup_factor, cfg.train.lr, cfg.train.min_lr))
    accelerator.register_for_checkpointing(scheduler)
    model_ref = accelerator.unwrap_model(trainer).model
    if log_with:
        from omegaconf import OmegaConf

        accelerator.init_trackers(out.name or "whaleid", config=_flat(OmegaConf.to_container(cfg, resolve=True)))

    state = resume_state(accelerator, out, bool(cfg.resume))
    state.setdefault("steps", state["epoch"] * steps_per_epoch)
    state.setdefault("warned", [])
    state.setdefault("train_s", 0.0)
    log_every = int(cfg.train.log_every) if cfg.train.log_every else None

    result = None
    for epoch in range(state["epoch"] + 1, epochs + 1):
        started = time.time()
        sampler.epoch = epoch  # order and augmentations of this epoch, whether resumed or not
        mean_loss, count = train_epoch(trainer, train_loader, optimizer, scheduler, accelerator, steps_per_epoch,
                                       cfg.train.grad_clip, desc=f"epoch {epoch}/{epochs}", log_every=log_every)
        took = time.time() - started
        state["steps"] += count
        state["train_s"] += took
        img_s = count * int(cfg.train.batch_size) * accelerator.num_processes / max(took, 1e-9)
        lr_now = scheduler.get_last_lr()[0]
        line = f"epoch {epoch}/{epochs} loss {mean_loss:.4f} lr {lr_now:.2e} {img_s:.1f} img/s"
        logged = {"train/loss": mean_loss, "train/lr": lr_now, "train/img_s": img_s}
        if epoch % int(cfg.train.eval_every) == 0 or epoch == epochs:
            result, per_query, emb = run_eval(epoch)
            result = with_baseline(result)
            result.update(train_loss=mean_loss, steps=state["steps"], lr=lr_now, img_s=img_s,
                          train_s=state["train_s"],
                          images_seen=state["steps"] * int(cfg.train.batch_size) * accelerator.num_processes)
            logged.update({"val/mAP": result["mAP"], "val/lift": result["lift"] or 0.0,
                           **{f"val/{k}": v for k, v in result["scenarios"].items()}})
            line += (f" | val mAP {result['mAP']:.4f} random {baseline['mAP']:.4f} lift {_fmt_lift(result['lift'])} | "
                     + " ".join(f"{k} {v:.3f}" for k, v in result["scenarios"].items()))
            if accelerator.is_main_process:
                with open(out / "history.jsonl", "a") as fh:
                    fh.write(json.dumps(result) + "\n")
                if result["mAP"] > state["best_mAP"]:
                    state["best_mAP"] = result["mAP"]
                    _save_weights(model_ref, out / "best.safetensors")
                    save_oof(out, image_ids, emb, per_query)
                log.info(line)
                report_health(out, state)
        else:
            log.info(line)
        if log_with:
            accelerator.log(logged, step=epoch)
        state["epoch"] = epoch
        save_checkpoint(accelerator, out, state, model_ref)
    accelerator.end_training()
    return json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else (result or {})


def _flat(tree) -> dict:
    """Config as flat ``a.b: value`` pairs of scalars (what trackers accept as hyperparameters)."""
    from core.runs import flatten

    return {k: json.dumps(v) if isinstance(v, list) else v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flatten(tree).items()}


def save_oof(out: Path, image_ids, embeddings, per_query) -> None:
    """``oof.npz`` (image_ids, embeddings of the validation images) and ``per_query.csv`` of one evaluation."""
    import numpy as np

    tmp = out / "oof.tmp.npz"
    np.savez(tmp, image_ids=np.asarray(image_ids, dtype=str), embeddings=np.asarray(embeddings, dtype=np.float32))
    os.replace(tmp, out / "oof.npz")
    tmp = out / "per_query.csv.tmp"
    per_query.to_csv(tmp, index=False)
    os.replace(tmp, out / "per_query.csv")


def _fmt_lift(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def read_history(out: Path) -> list[dict]:
    path = out / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def report_health(out: Path, state: dict) -> list[dict]:
    """Rewrite ``metrics.json`` as the best evaluation so far plus the run's current ``warnings``;
    log each warning the first time it holds."""
    history = read_history(out)
    if not history:
        return []
    for h in history:  # the checks compare against the random ranking of the same scenarios
        h["random_mAP"] = h.get("random", {}).get("mAP", 0.0)
    warnings = learning_warnings(history)
    for w in warnings:
        if w["code"] not in state["warned"]:
            log.warning("NOT LEARNING? %s. Hint: %s", w["message"], w["hint"])
            state["warned"].append(w["code"])
    best = max(history, key=lambda h: h["mAP"])
    best.pop("random_mAP", None)
    best["warnings"] = warnings
    _write_json(out / "metrics.json", best)
    return warnings


def write_split(path: Path, train_df, val_df, class_of: dict) -> None:
    """``image_id, whale_id, role (train|val), class_index`` (-1 for validation rows), ``viewpoint, date,
    encounter_id``: what trained on what, and enough to rebuild the validation scenarios."""
    import pandas as pd

    rows = pd.concat([train_df.assign(role="train"), val_df.assign(role="val")], ignore_index=True)
    rows["class_index"] = [class_of.get(w, -1) if r == "train" else -1 for w, r in zip(rows["whale_id"], rows["role"])]
    tmp = path.with_suffix(".tmp")
    extra = [c for c in ("viewpoint", "date", "encounter_id") if c in rows.columns]  # what scenarios are built from
    rows[["image_id", "whale_id", "role", "class_index"] + extra].to_csv(tmp, index=False)
    os.replace(tmp, path)


if __name__ == "__main__":
    from core.config import ConfigError
    from core.data import DataError
    from core.plugins import PluginError

    try:
        main()
    except (ConfigError, DataError, PluginError) as exc:  # the user's input: the message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
