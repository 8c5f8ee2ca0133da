"""Configs: YAML files that may extend a base file, ``key=value`` overrides, and validation.

A config file may name a base with ``extends: base.yaml`` (a path relative to that file); the file's
own keys override the base's. Every key must be one that ``DEFAULTS`` knows, except inside the
component nodes (``dataset``, ``backbone``, ``neck``, ``loss``, ``postprocess`` entries), whose
options are checked against the chosen plugin's factory when it is built.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from core.hookspecs import HOOK_POINTS

# Every top-level key and its default. configs/base.yaml is the default recipe written out: every value here is
# the same there (a test holds them equal), and base.yaml adds the component plugins' options.
# Component nodes are open: their keys go to the plugin.
DEFAULTS: dict[str, Any] = {
    "seed": 42,
    "output_dir": "runs/default",
    "plugins": [],  # plugin modules to load besides the built-ins and installed entry points
    "plugins_exclude": [],  # installed plugins (entry point or module names) to leave out
    "resume": False,
    "eval_only": False,
    "weights": None,  # a safetensors file to start from (eval_only evaluates it)
    "seeds": None,  # a list of seeds: one run per seed under output_dir/seed<s>/, summarised in seeds.json
    "log_with": [],  # accelerate trackers, e.g. [tensorboard] (pip install 'whaleid[tensorboard]'), beside the run files
    "data": {
        "root": "data/synthetic/small/train",
        "image_size": [128, 128],  # [height, width]; images are squashed to it
        "num_folds": 5,
        "fold": 0,  # an index, a list of indices, or "all": one run per fold under output_dir/fold<k>/ and cv.json
        "fold_seed": 42,  # fold assignment's own seed: runs with other training seeds share the same folds
        "holdout_whales": True,  # validation whales never appear in training (test whales are unseen)
        "num_workers": 2,
        "rotate_landscape": False,  # rotate images wider than tall 90 degrees clockwise, in training and inference
    },
    # The components of the CPU default, by name. Their options (configs/base.yaml) belong to the plugin a node
    # names, so they live in configs: a config that names another backbone or loss must not inherit them.
    "dataset": {"name": "belugas"},
    "backbone": {"name": "timm", "model": "efficientnet_lite0", "pretrained": False},
    "neck": {"name": "gem_bn", "embedding_size": 512},
    "loss": {"name": "arcface_focal"},
    "postprocess": [{"name": "expand", "db_k": 1, "query_k": 0}, {"name": "knn", "top_k": 50},
                    {"name": "local_match", "shortlist": 50, "top_k": 20, "fit_kind": "view"}],
    "train": {
        "epochs": 6,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 1.0e-4,
        "weight_decay": 1.0e-6,
        "warmup_epochs": 1,
        "warmup_factor": 10.0,  # warm-up rises from lr to lr * warmup_factor, then cosine down to min_lr
        "min_lr": 1.0e-6,
        "mixed_precision": "no",  # no | fp16 | bf16
        "eval_every": 1,
        "max_steps_per_epoch": None,
        "grad_clip": None,
        "channels_last": True,  # NHWC weights and batches in training: 1.38x faster on 2 CPU cores (Lite0)
        "group_lr": {},  # base lr per parameter group, e.g. {backbone: 1.6e-3, neck: 1.6e-2, head: 1.6e-2}
        "log_every": None,  # steps between progress lines when output is not a terminal (default: ~10 per epoch)
    },
    "infer": {"batch_size": 64, "tta_flip": True},
    "ensemble_weight": 1.0,  # this model's weight when a submission ensembles several runs
}

OPEN_NODES = set(HOOK_POINTS)  # one node per hook point


class ConfigError(ValueError):
    """A config file or override is malformed, names an unknown key, or lacks a required one."""


def did_you_mean(word: str, options, prefix: str = "") -> str:
    """`` Did you mean 'x'?`` for the closest of ``options`` to ``word``, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" Did you mean '{prefix}{close[0]}'?" if close else ""


def _load_file(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle: {' -> '.join(map(str, seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml errors carry the line number
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(cfg).__name__}")
    _check_keys(cfg, DEFAULTS, str(path))
    base_name = cfg.pop("extends", None)
    if base_name is None:
        return cfg
    base = _load_file(path.parent / str(base_name), seen + (path,))
    return _merge(base, cfg)


def _merge(base: DictConfig, top: DictConfig) -> DictConfig:
    # Component nodes are replaced as a whole when the name changes, so a base's options for
    # another plugin do not leak into this one.
    for key in OPEN_NODES:
        if key in top and key in base:
            t, b = top[key], base[key]
            if isinstance(t, DictConfig) and isinstance(b, DictConfig) and t.get("name", b.get("name")) != b.get("name"):
                base[key] = t
    return OmegaConf.merge(base, top)


def _check_keys(cfg: DictConfig, schema: dict, where: str, prefix: str = "") -> None:
    for key in cfg:
        full = f"{prefix}{key}"
        if prefix == "" and key == "extends":
            continue
        if key not in schema:
            raise ConfigError(f"{where}: unknown config key '{full}'.{did_you_mean(key, schema, prefix)} "
                              f"Known keys here: {', '.join(schema)}")
        if prefix == "" and key in OPEN_NODES:
            continue
        value, expected = cfg[key], schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, DictConfig):
                raise ConfigError(f"{where}: '{full}' must be a mapping with keys {', '.join(expected) or 'of your choice'}")
            if expected:  # an empty default ({}) is an open mapping, e.g. train.group_lr
                _check_keys(value, expected, where, prefix=f"{full}.")


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> DictConfig:
    """Defaults <- config file (and its bases) <- ``key=value`` overrides, validated and resolved."""
    cfg = OmegaConf.create(DEFAULTS)
    if path is not None:
        cfg = _merge(cfg, _load_file(Path(path)))
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
    try:
        dot = OmegaConf.from_dotlist(overrides)
    except Exception as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {exc}") from exc
    _check_keys(dot, DEFAULTS, "command line")
    cfg = _merge(cfg, dot)
    _validate(cfg)
    OmegaConf.resolve(cfg)
    return cfg


def _validate(cfg: DictConfig) -> None:
    if cfg.train.mixed_precision is False:  # YAML reads a bare `no` as false
        cfg.train.mixed_precision = "no"
    for key in ("dataset", "backbone", "neck", "loss"):
        if not isinstance(cfg[key], DictConfig) or "name" not in cfg[key]:
            raise ConfigError(f"'{key}' must be a mapping with a 'name' key, got {cfg[key]!r}")
    if not isinstance(cfg.postprocess, ListConfig) or not all("name" in s for s in cfg.postprocess):
        raise ConfigError("'postprocess' must be a list of mappings, each with a 'name' key")
    if cfg.train.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"train.mixed_precision must be no, fp16 or bf16, got {cfg.train.mixed_precision!r}")
    size = cfg.data.image_size
    if not (isinstance(size, ListConfig) and len(size) == 2 and all(int(s) > 0 for s in size)):
        raise ConfigError(f"data.image_size must be [height, width], got {size!r}")
    fold_list(cfg)  # raises on a bad data.fold
    seeds = cfg.seeds
    if seeds is not None and not (isinstance(seeds, ListConfig) and len(seeds) > 0
                                  and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise ConfigError(f"seeds must be a non-empty list of integers, e.g. seeds=[0,1,2], got {seeds!r}")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeats a value: {list(seeds)}")
    log_with = cfg.log_with
    if isinstance(log_with, str):
        cfg.log_with = [log_with]
    elif log_with is None:
        cfg.log_with = []


def fold_list(cfg: DictConfig) -> list[int] | None:
    """The folds ``data.fold`` asks for when it is ``all`` or a list; None for a single index."""
    fold, n = cfg.data.fold, int(cfg.data.num_folds)
    if isinstance(fold, bool):
        raise ConfigError(f"data.fold must be an index, a list of indices or 'all', got {fold!r}")
    if isinstance(fold, int):
        if not 0 <= fold < n:
            raise ConfigError(f"data.fold must be in [0, {n}), got {fold}")
        return None
    if isinstance(fold, str) and fold.strip().lower() == "all":
        return list(range(n))
    if isinstance(fold, ListConfig) and len(fold) > 0:
        folds = list(fold)
        bad = [f for f in folds if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < n]
        if bad or len(set(folds)) != len(folds):
            raise ConfigError(f"data.fold lists {folds}: each must be a distinct index in [0, {n})")
        return folds
    raise ConfigError(f"data.fold must be an index in [0, {n}), a list of them or 'all', got {fold!r}")


def component(cfg: DictConfig, key: str) -> dict:
    """A component node as a plain dict, ready for ``Registry.build``."""
    return OmegaConf.to_container(cfg[key], resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
