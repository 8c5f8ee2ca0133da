"""From a config to what one run trains with: the fold's data, and the loss head, loader and optimizer."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from core.config import component
from core.scenarios import build_scenarios
from core.training.loop import TrainStep, freeze_unused_parameters, make_optimizer, parameter_groups
from core.training.sampling import EpochSampler, SeededSamples

log = logging.getLogger("whaleid")


def split_data(cfg, registries):
    """The dataset plugin's data, this fold's training and validation rows, the validation scenarios and the
    training classes (sorted whale ids: a class index is a position in this list)."""
    data = registries["dataset"].build(component(cfg, "dataset"), root=cfg.data.root, image_size=list(cfg.data.image_size))
    data.rotate_landscape = bool(cfg.data.rotate_landscape)
    train_df, val_df = data.split(int(cfg.data.num_folds), int(cfg.data.fold), bool(cfg.data.holdout_whales),
                                  int(cfg.data.fold_seed))
    scenarios = build_scenarios(val_df)
    if not scenarios:
        raise ValueError(f"fold {cfg.data.fold} of {cfg.data.root} yields no validation scenario with a true match; "
                         "use more data or fewer folds")
    classes = sorted(train_df["whale_id"].unique())
    log.info("data %s: %d train images of %d whales, %d validation images; scenarios: %s", cfg.data.root,
             len(train_df), len(classes), len(val_df), ", ".join(f"{s.name} ({len(s.queries)} q)" for s in scenarios))
    return data, train_df, val_df, scenarios, classes


def build_training(cfg, registries, data, train_df, classes, model):
    """The loss head over ``classes``, model and head as one ``TrainStep``, the seeded sampler and loader, and
    the optimizer over the parameters this combination trains."""
    class_of, counts = {w: i for i, w in enumerate(classes)}, train_df["whale_id"].value_counts()
    loss = registries["loss"].build(component(cfg, "loss"), optional={"class_counts": [int(counts[w]) for w in classes]},
                                    embedding_size=model.embedding_size, num_classes=len(classes))
    trainer = TrainStep(model, loss, channels_last=bool(cfg.train.channels_last))
    train_set = SeededSamples(data.train_dataset(train_df, [class_of[w] for w in train_df["whale_id"]]), int(cfg.seed))
    sampler = EpochSampler(len(train_set), int(cfg.seed))
    workers = int(cfg.data.num_workers)
    loader = DataLoader(train_set, batch_size=int(cfg.train.batch_size), sampler=sampler, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    probe = [train_set.dataset[i] for i in range(min(2, len(train_set)))]
    unused = freeze_unused_parameters(trainer, torch.stack([x for x, _ in probe]), torch.tensor([y for _, y in probe]))
    if unused:
        log.info("frozen, as this combination of components never uses them: %s", ", ".join(unused))
    return trainer, sampler, loader, make_optimizer(cfg.train, parameter_groups(trainer))


def steps_per_epoch(cfg, prepared_loader, num_images: int) -> int:
    """Batches per epoch and process of the accelerator-prepared loader, capped by ``train.max_steps_per_epoch``."""
    steps = len(prepared_loader)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, int(cfg.train.max_steps_per_epoch))
    if steps == 0:
        raise ValueError(f"training set has {num_images} images, fewer than one batch of {cfg.train.batch_size} per process")
    return steps


