"""The whaleid runner: ``accelerate launch core/run.py --config configs/X.yaml [key=value ...]``.

Reads the config, loads the plugins, splits the data, trains with the config's recipe, evaluates with the
competition metric every ``train.eval_every`` epochs, and keeps the best and last weights. Writes into
``output_dir``: ``config.yaml`` (resolved), ``split.csv`` (each image's role and class index),
``metrics.json`` (the best evaluation, its ``lift`` over a random ranking and the run's ``warnings``),
``history.jsonl`` (one line per evaluation), ``best.safetensors``, ``last.safetensors``, ``checkpoint/``
(for ``resume=true``), and for the best evaluation ``oof.npz`` (validation ids and embeddings) and
``per_query.csv`` (query_id, scenario, ap), which ``tools.compare`` and ``tools.ensemble`` read; a step fitted on
validation whales (``local_match``) is fitted then (``core.training.fit``: ``fitted.yaml``, ``postprocess_fit.json``).

``data.fold=all`` (or ``data.fold=[0,2]``) trains one run per fold into ``output_dir/fold<k>/`` and writes
``cv.json`` (out-of-fold mAP); ``seeds=[0,1,2]`` repeats the run (or the folds) per seed into
``output_dir/seed<s>/`` and writes ``seeds.json``. With ``resume=true`` finished runs are skipped and an
unfinished one resumes from its checkpoint, drawing the same batches (``core.training.sampling``).

This file is the story; the mechanics live in ``core.training`` (``loop``, ``checkpoint``, ``evaluate``,
``health``, ``runs``), which no bundle carries.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable, not core/
    _root = str(Path(__file__).resolve().parent.parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, _root)

import torch

from core.config import fold_list, load_config, save_config
from core.logs import setup_logging
from core.model import build_model, load_weights
from core.plugins import build_registries
from core.retrieval import build_steps
from core.training import runs
from core.training.checkpoint import finished, resume_state, save_checkpoint, save_weights
from core.training.evaluate import Validation, summary_line
from core.training.fit import fit_after_training
from core.training.health import report_health
from core.training.loop import make_scheduler, train_epoch, warn_idle_cores
from core.training.setup import build_training, split_data, steps_per_epoch

log = logging.getLogger("whaleid")


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


def _start_parent(cfg) -> Path:
    parent = Path(cfg.output_dir)
    if _is_main():
        parent.mkdir(parents=True, exist_ok=True)
        save_config(cfg, parent / "config.yaml")
    return parent


def run_folds(cfg) -> dict:
    """Train ``data.fold``'s folds one after another into ``output_dir/fold<k>/``; write ``cv.json``."""
    from accelerate import PartialState

    parent, folds = _start_parent(cfg), fold_list(cfg)
    for k in folds:
        out = parent / f"fold{k}"
        if cfg.resume and finished(out, int(cfg.train.epochs)):
            log.info("fold %d already finished in %s; skipped", k, out)
            continue
        log.info("fold %d of %s: training into %s", k, folds, out)
        train_one(_child(cfg, out, **{"data.fold": k}))
    PartialState().wait_for_everyone()
    cv = runs.cross_validation([parent / f"fold{k}" for k in folds])
    if _is_main():
        runs.write_json(parent / "cv.json", cv)
        log.info("cross-validation over folds %s: OOF mAP %.4f (random %.4f); per fold %s, mean %.4f +- %.4f | %s",
                 folds, cv["oof_mAP"], cv["random"]["mAP"], ", ".join(f"{v:.4f}" for v in cv["fold_mAP"]),
                 cv["fold_mean"], cv["fold_std"], " ".join(f"{k} {v:.3f}" for k, v in cv["oof_scenarios"].items()))
    return cv


def run_seeds(cfg) -> dict:
    """One run (or one set of folds) per seed into ``output_dir/seed<s>/``; ``seeds.json`` holds the spread."""
    parent, seeds, results = _start_parent(cfg), list(cfg.seeds), {}
    for s in seeds:
        out = parent / f"seed{s}"
        child = _child(cfg, out, seed=int(s), seeds=None)
        log.info("seed %d of %s: into %s", s, seeds, out)
        if fold_list(child) is None and cfg.resume and finished(out, int(cfg.train.epochs)):
            log.info("seed %d already finished in %s; skipped", s, out)
            results[s] = runs.metrics(out)
            continue
        results[s] = run_config(child)
    key = "oof_mAP" if fold_list(cfg) is not None else "mAP"
    values = [float(results[s][key]) for s in seeds]
    summary = runs.seeds_summary(seeds, key, values)
    if _is_main():
        runs.write_json(parent / "seeds.json", summary)
        log.info("over seeds %s: %s %.4f +- %.4f (min %.4f, max %.4f)", seeds, key, summary["mean"], summary["std"],
                 summary["min"], summary["max"])
    return summary


def train_one(cfg) -> dict:
    """Train and evaluate one fold with one seed into ``cfg.output_dir``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # set-up: the accelerator, the data split, the model, the validation fold
    log_with = list(cfg.log_with) or None
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available(),
                              log_with=log_with, project_dir=str(cfg.output_dir) if log_with else None)
    out, main_process = Path(cfg.output_dir), accelerator.is_main_process
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    set_seed(int(cfg.seed))
    warn_idle_cores(accelerator)
    registries = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])
    data, train_df, val_df, scenarios, classes = split_data(cfg, registries)
    if main_process:
        runs.write_split(out / "split.csv", train_df, val_df, {w: i for i, w in enumerate(classes)})
    model = build_model(cfg, registries)
    if cfg.weights:
        load_weights(model, cfg.weights)
    validation = Validation(cfg, data, val_df, scenarios, build_steps(cfg.postprocess, registries["postprocess"]),
                            accelerator)
    if cfg.eval_only:
        validation.loader = accelerator.prepare(validation.loader)
        result, per_query, emb = validation(model.to(accelerator.device), 0)
        if main_process:
            runs.write_json(out / "metrics.json", result)
            runs.save_oof(out, validation.image_ids, emb, per_query)
            fit_after_training(out, validation.steps)
        log.info("eval %s", summary_line(result))
        return result

    # set-up: the loss head, the seeded loader, the optimizer and lr curve, and the state to resume
    trainer, sampler, train_loader, optimizer = build_training(cfg, registries, data, train_df, classes, model)
    trainer, optimizer, train_loader, validation.loader = accelerator.prepare(trainer, optimizer, train_loader,
                                                                              validation.loader)
    per_epoch = steps_per_epoch(cfg, train_loader, len(train_df))
    scheduler = make_scheduler(optimizer, cfg.train, per_epoch)
    accelerator.register_for_checkpointing(scheduler)
    model = accelerator.unwrap_model(trainer).model
    if log_with:
        from omegaconf import OmegaConf

        accelerator.init_trackers(out.name or "whaleid", config=runs.hyperparameters(OmegaConf.to_container(cfg, resolve=True)))
    state = resume_state(accelerator, out, bool(cfg.resume))
    state.setdefault("steps", state["epoch"] * per_epoch)
    state.setdefault("warned", [])
    state.setdefault("train_s", 0.0)

    # the loop: an epoch, an evaluation when due, a checkpoint
    epochs, batch = int(cfg.train.epochs), int(cfg.train.batch_size) * accelerator.num_processes
    for epoch in range(state["epoch"] + 1, epochs + 1):
        started = time.time()
        sampler.epoch = epoch  # order and augmentations of this epoch, whether resumed or not
        mean_loss, count = train_epoch(trainer, train_loader, optimizer, scheduler, accelerator, per_epoch,
                                       cfg.train.grad_clip, desc=f"epoch {epoch}/{epochs}",
                                       log_every=int(cfg.train.log_every) if cfg.train.log_every else None)
        took = time.time() - started
        state["steps"] += count
        state["train_s"] += took
        trained = {"train_loss": mean_loss, "steps": state["steps"], "lr": scheduler.get_last_lr()[0],
                   "img_s": count * batch / max(took, 1e-9), "train_s": state["train_s"],
                   "images_seen": state["steps"] * batch}
        line = f"epoch {epoch}/{epochs} loss {mean_loss:.4f} lr {trained['lr']:.2e} {trained['img_s']:.1f} img/s"
        logged = {"train/loss": mean_loss, "train/lr": trained["lr"], "train/img_s": trained["img_s"]}
        if epoch % int(cfg.train.eval_every) == 0 or epoch == epochs:
            result, per_query, emb = validation(model, epoch)
            result.update(trained)
            logged.update({"val/mAP": result["mAP"], "val/lift": result["lift"] or 0.0,
                           **{f"val/{k}": v for k, v in result["scenarios"].items()}})
            line += " | " + summary_line(result)
            if main_process:
                record_evaluation(out, state, result, per_query, emb, validation.image_ids, model)
        log.info(line)
        if log_with:
            accelerator.log(logged, step=epoch)
        state["epoch"] = epoch
        save_checkpoint(accelerator, out, state, model)
    accelerator.end_training()
    if main_process:
        fit_after_training(out, validation.steps)
    return runs.metrics(out) if (out / "metrics.json").exists() else {}


def record_evaluation(out: Path, state: dict, result: dict, per_query, emb, image_ids, model) -> None:
    """One evaluation into the run folder: a ``history.jsonl`` line; for a new best, ``best.safetensors``,
    ``oof.npz`` and ``per_query.csv``; ``metrics.json`` rewritten as the best so far with the health warnings."""
    runs.append_history(out, result)
    if result["mAP"] > state["best_mAP"]:
        state["best_mAP"] = result["mAP"]
        save_weights(model, out / "best.safetensors")
        runs.save_oof(out, image_ids, emb, per_query)
    report_health(out, state["warned"])


if __name__ == "__main__":
    from core.config import ConfigError
    from core.data import DataError
    from core.plugins import PluginError

    try:
        main()
    except (ConfigError, DataError, PluginError) as exc:  # the user's input: the message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
