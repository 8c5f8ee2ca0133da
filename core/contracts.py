"""The plugin contracts of ``core.hookspecs`` as code: a ``typing.Protocol`` per hook point, and ``check`` that
builds a registered plugin at a tiny size and exercises it, returning what breaks the contract.

``tests/core/test_contracts.py`` runs ``check`` on every name of every registry (built-in, from the config's
``plugins:`` or installed by entry point), so a plugin is tested the moment it registers. A factory with
required options beyond the ones the runner passes gives them in a ``contract_options`` attribute (a dict:
the options to build it with for the check), e.g. ``TimmBackbone.contract_options = {"model": "resnet18"}``.

What each check asserts:

- dataset: built on a survey folder; ``metadata`` has the base columns; ``split`` gives two disjoint non-empty
  tables; a training item is ``(float32 [3, h, w], int)`` and an evaluation item ``(float32 [3, h, w], int, ok)``.
- backbone: an ``nn.Module`` with an int ``num_features``; on ``float32 [2, 3, 64, 64]`` it returns a map
  ``[2, C, h, w]``, a vector ``[2, C]`` or a list of maps, the last with ``num_features`` channels, finite.
- neck: an ``nn.Module`` with an int ``embedding_size``; on a map ``[2, C, 4, 4]`` (a list of two maps when the
  factory names ``feature_channels``) it returns finite ``[2, embedding_size]``, and gradients reach its input.
- loss: an ``nn.Module``; ``loss(embeddings [6, 8], labels [6])`` over 3 classes is a finite scalar whose
  gradients with respect to the embeddings and its own parameters are finite.
- postprocess: a callable ``step(ctx) -> ctx``; alone, after ``knn``, or before ``knn`` (whichever it is
  built for), it leaves a valid ranking: at most 20 rows a query, scores in [0, 1], never the query itself.
  A fitted step (``FittedStep``: it has ``fit``) is also fitted: in the chain that ranked, with ``record`` set,
  on queries whose near-copies (other ids) are in the database, ``fit`` returns exactly its ``fitted_keys``,
  the step then ranks as one rebuilt with them, validly, each such query's copy first. ``LocalMatching`` states
  what the catalogue asks of a keypoint-matching step (``local_match``).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

# the options the runner passes itself (never part of a plugin's contract_options)
FIXED = {"dataset": ("root", "image_size"), "backbone": (), "neck": ("in_features", "feature_channels"),
         "loss": ("embedding_size", "num_classes", "class_counts"), "postprocess": ()}


@runtime_checkable
class Backbone(Protocol):
    num_features: int

    def __call__(self, images: torch.Tensor) -> Any: ...


@runtime_checkable
class Neck(Protocol):
    embedding_size: int

    def __call__(self, features: Any) -> torch.Tensor: ...


@runtime_checkable
class Loss(Protocol):
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PostprocessStep(Protocol):
    def __call__(self, ctx: Any) -> Any: ...


@runtime_checkable
class FittedStep(Protocol):
    """A postprocess step fitted on validation whales after training (``core.training.fit``): it appends what it
    sees while ranking to ``record`` (a list the fit sets), ``fit(records, truth)`` returns its fitted options
    (the names in ``fitted_keys``, a class attribute) and ranks with them from then on, and ``needs_top_k`` is how
    many candidates the ranking before it must keep."""
    record: Any
    fitted_keys: Sequence[str]
    needs_top_k: int

    def __call__(self, ctx: Any) -> Any: ...
    def fit(self, records: list, truth: set) -> dict: ...


@runtime_checkable
class LocalMatching(Protocol):
    """What a keypoint-matching step offers the catalogue (``catalogue/deciding/local.py``): a photo's keypoints (cached
    per file), which mirrorings of a pair to try, the inliers of a pair and its matches and their inlier mask (the
    review page draws them), the side the photos are read at, its thread count, and the fusion of a global score
    with inliers it fits and applies."""
    max_side: int
    workers: int

    def features(self, path: Any, flip: bool = False) -> Any: ...
    def pair_flips(self, query_view: Any, photo_view: Any) -> tuple: ...
    def inliers(self, a: Any, b: Any) -> int: ...
    def matches(self, a: Any, b: Any) -> tuple: ...
    def inlier_mask(self, src: Any, dst: Any) -> Any: ...
    def fit(self, records: list, truth: set) -> dict: ...
    def probability(self, g: Any, n: Any) -> Any: ...


@runtime_checkable
class Dataset(Protocol):
    metadata: Any

    def split(self, num_folds: int, fold: int, holdout_whales: bool, seed: int) -> tuple: ...
    def train_dataset(self, df: Any, labels: Sequence[int]) -> Any: ...
    def eval_dataset(self, df: Any, on_error: str = "raise") -> Any: ...


PROTOCOLS = {"dataset": Dataset, "backbone": Backbone, "neck": Neck, "loss": Loss, "postprocess": PostprocessStep}


class ContractError(AssertionError):
    pass


def options_for(factory, point: str) -> dict:
    """The options a factory is built with for its check: its ``contract_options``, which must cover every
    required parameter the runner does not pass."""
    options = dict(getattr(factory, "contract_options", None) or {})
    required = [n for n, p in inspect.signature(factory).parameters.items()
                if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and n not in FIXED[point] and n not in options]
    if required:
        raise ContractError(f"needs option(s) {required} to be built; give the factory a contract_options attribute "
                            "with values for a tiny instance")
    return options


def _finite(x, what: str) -> None:
    tensors = x if isinstance(x, (list, tuple)) else [x]
    for t in tensors:
        if not torch.isfinite(torch.as_tensor(t).float()).all():
            raise ContractError(f"{what} is not finite")


def check(point: str, name: str, registries: dict, survey=None) -> None:
    """Build ``name`` of hook ``point`` from ``registries`` and exercise it; raises ``ContractError`` saying what
    breaks the contract (``survey``: a survey folder, for datasets)."""
    factory = registries[point].factory(name)
    options = options_for(factory, point)
    torch.manual_seed(0)
    try:
        globals()[f"_check_{point}"](registries[point], dict(options, name=name), survey)
    except ContractError:
        raise
    except Exception as exc:  # any failure of the plugin is a broken contract, named
        raise ContractError(f"{point} '{name}' failed: {type(exc).__name__}: {exc}") from exc


def _is(obj, point: str, name: str) -> None:
    if not isinstance(obj, PROTOCOLS[point]):
        raise ContractError(f"{point} '{name}' built a {type(obj).__name__}, which lacks what "
                            f"{PROTOCOLS[point].__name__} needs")


def _check_dataset(registry, spec, survey) -> None:
    if survey is None:
        raise ContractError("a dataset check needs a survey folder")
    data = registry.build(spec, root=str(survey), image_size=[32, 32])
    _is(data, "dataset", spec["name"])
    missing = {"image_id", "path", "viewpoint"} - set(data.metadata.columns)
    if missing:
        raise ContractError(f"metadata lacks {sorted(missing)}")
    train, val = data.split(3, 0, True, 0)
    if not len(train) or not len(val) or set(train["image_id"]) & set(val["image_id"]):
        raise ContractError("split did not give two disjoint non-empty tables")
    classes = {w: i for i, w in enumerate(sorted(set(train["whale_id"])))}
    x, y = data.train_dataset(train, [classes[w] for w in train["whale_id"]])[0]
    if x.dtype != torch.float32 or tuple(x.shape) != (3, 32, 32) or not isinstance(int(y), int):
        raise ContractError(f"a training item is {x.dtype} {tuple(x.shape)}, expected float32 (3, 32, 32) and a class")
    item = data.eval_dataset(val)[0]
    if len(item) != 3 or tuple(item[0].shape) != (3, 32, 32):
        raise ContractError("an evaluation item is not (image [3, 32, 32], position, ok)")
    _finite(x, "a training image")


def _check_backbone(registry, spec, survey) -> None:
    model = registry.build(spec)
    _is(model, "backbone", spec["name"])
    if not isinstance(model, torch.nn.Module) or not isinstance(model.num_features, int):
        raise ContractError("a backbone is an nn.Module with an int num_features")
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 64, 64))
    last = out[-1] if isinstance(out, (list, tuple)) else out
    if last.ndim not in (2, 4) or last.shape[0] != 2 or last.shape[1] != model.num_features:
        raise ContractError(f"returned {tuple(last.shape)}; expected [2, {model.num_features}] or [2, "
                            f"{model.num_features}, h, w]")
    _finite(out, "its output")


def _check_neck(registry, spec, survey) -> None:
    channels = [8, 16]
    maps = [torch.randn(2, 8, 8, 8, requires_grad=True), torch.randn(2, 16, 4, 4, requires_grad=True)]
    staged = "feature_channels" in inspect.signature(registry.factory(spec["name"])).parameters
    neck = registry.build(spec, optional={"feature_channels": channels}, in_features=16)
    _is(neck, "neck", spec["name"])
    if not isinstance(neck, torch.nn.Module) or not isinstance(neck.embedding_size, int):
        raise ContractError("a neck is an nn.Module with an int embedding_size")
    neck.train()
    out = neck(maps if staged else maps[1])
    if tuple(out.shape) != (2, neck.embedding_size):
        raise ContractError(f"returned {tuple(out.shape)}; expected (2, {neck.embedding_size})")
    _finite(out, "its embeddings")
    out.float().pow(2).sum().backward()
    grad = maps[1].grad
    if grad is None:
        raise ContractError("no gradient reaches its input")
    _finite(grad, "the gradient at its input")


def _check_loss(registry, spec, survey) -> None:
    loss = registry.build(spec, optional={"class_counts": [1, 5, 20]}, embedding_size=8, num_classes=3)
    _is(loss, "loss", spec["name"])
    emb = torch.randn(6, 8, requires_grad=True)
    value = loss(emb, torch.tensor([0, 1, 2, 0, 1, 2]))
    if not torch.is_tensor(value) or value.numel() != 1:
        raise ContractError("a loss returns a scalar tensor")
    _finite(value, "the loss")
    value.backward()
    if emb.grad is None:
        raise ContractError("no gradient reaches the embeddings")
    _finite(emb.grad, "the gradient at the embeddings")
    for n, p in loss.named_parameters() if isinstance(loss, torch.nn.Module) else ():
        if p.grad is not None:
            _finite(p.grad, f"the gradient of its parameter {n}")


def _check_postprocess(registry, spec, survey) -> None:
    from core.metric import validate_predictions
    from core.retrieval import RetrievalContext, rank_scenario

    rng = np.random.default_rng(1)
    db, ids = rng.normal(size=(40, 8)).astype(np.float32), [f"img{i}" for i in range(40)]
    q_ids = ids[:6] + ["new0", "new1"]  # six queries are themselves in the database
    q = np.vstack([db[:6], rng.normal(size=(2, 8)).astype(np.float32)])

    def ctx():
        unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        return RetrievalContext([f"s-{i}" for i in q_ids], list(q_ids), list(ids), unit(q.copy()), unit(db.copy()),
                                scenario="s")

    step = registry.build(spec)
    _is(step, "postprocess", spec["name"])
    knn = registry.build({"name": "knn"}) if "knn" in registry.factories else None
    errors = []
    for chain in ([step], [knn, step], [step, knn]):
        if None in chain:
            continue
        try:
            frame = rank_scenario(ctx(), chain)
        except Exception as exc:  # this position does not suit the step; another may
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        try:
            validate_predictions(frame, {f"s-{i}": i for i in q_ids})
        except ValueError as exc:
            raise ContractError(f"the ranking it leaves is not valid: {exc}") from exc
        if callable(getattr(step, "fit", None)):
            _check_fitted(registry, spec, chain.index(step) if len(chain) > 1 else -1, knn)
        return
    raise ContractError("no chain with it ranks: " + " | ".join(errors))


def _check_fitted(registry, spec, position: int, knn) -> None:
    """Fit a fitted step on what it recorded while ranking queries whose near-copies (other ids) are in the
    database, rebuild it with the fitted options and rank again: each such query's copy comes first."""
    from core.metric import validate_predictions
    from core.retrieval import RetrievalContext, rank_scenario

    rng = np.random.default_rng(2)
    db, ids = rng.normal(size=(40, 8)).astype(np.float32), [f"img{i}" for i in range(40)]
    q = np.vstack([db[:6] + 0.05 * rng.normal(size=(6, 8)), rng.normal(size=(2, 8))]).astype(np.float32)
    q_ids = [f"q{i}" for i in range(6)] + ["new0", "new1"]
    truth = {(f"s-q{i}", f"img{i}") for i in range(6)}
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731

    def ctx():
        return RetrievalContext([f"s-{i}" for i in q_ids], list(q_ids), list(ids), unit(q.copy()), unit(db.copy()),
                                scenario="s")

    def chain_with(step):
        return [s for s in ([knn, step] if position == 1 else [step, knn] if position == 0 else [step]) if s is not None]

    step = registry.build(spec)
    if not isinstance(step, FittedStep) or int(step.needs_top_k) < 1:
        raise ContractError("it has fit() but not the rest of a fitted step (record, fitted_keys, needs_top_k >= 1)")
    step.record = []
    rank_scenario(ctx(), chain_with(step))
    fitted = step.fit(step.record, truth)
    if set(fitted) != set(step.fitted_keys):
        raise ContractError(f"fit() returned {sorted(fitted)}, expected its fitted_keys {sorted(step.fitted_keys)}")
    step.record = None  # fit applies its options: the step ranks as one rebuilt with them (core.training.fit)
    frame, own = (rank_scenario(ctx(), chain_with(s)) for s in (registry.build(dict(spec, **fitted)), step))
    if not frame.reset_index(drop=True).equals(own.reset_index(drop=True)):
        raise ContractError("after fit() the step ranks otherwise than one rebuilt with the options it returned")
    try:
        validate_predictions(frame, {f"s-{i}": i for i in q_ids})
    except ValueError as exc:
        raise ContractError(f"the ranking it leaves after its fit is not valid: {exc}") from exc
    first = frame.sort_values("score", ascending=False, kind="stable").groupby("query_id").head(1)
    pairs = zip(first["query_id"].astype(str), first["database_image_id"].astype(str))
    missed = sorted(q for q, d in pairs if q.startswith("s-q") and (q, d) not in truth)
    if missed:
        raise ContractError(f"after its fit, queries whose near-copy is in the database rank another first: {missed}")
