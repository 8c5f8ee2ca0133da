"""The five hook points of whaleid, as pluggy hook specifications.

Each hook is a *registration* hook: a plugin receives a ``register(name, factory)`` callable and
registers any number of named factories. The config then picks one by name, e.g.
``backbone: {name: timm, model: resnet18}`` calls the factory registered as ``timm`` with the
remaining keys as keyword arguments. What each factory returns:

dataset
    ``factory(root: str, image_size: [h, w], **options) -> WhaleData`` (``core.data.WhaleData``):
    a table of images (``metadata``: one row per image with ``image_id, path, viewpoint, date``
    and, for training data, ``whale_id, encounter_id``), a fold split, and torch datasets that
    yield ``(image float32 [3, h, w], int)`` pairs: the class index when training, the row
    position when embedding.
backbone
    ``factory(**options) -> torch.nn.Module`` taking ``float32 [B, 3, h, w]`` and returning a
    feature map ``[B, C, h', w']``, a pooled ``[B, C]`` vector, or a list of feature maps (one per
    stage). The module has an ``int`` attribute ``num_features`` (C of what it returns last).
neck
    ``factory(in_features: int, **options) -> torch.nn.Module`` taking what the backbone returns
    and returning embeddings ``float32 [B, E]``; it has an ``int`` attribute ``embedding_size``.
    A factory that names a ``feature_channels`` parameter also gets the channels of each map a
    ``stages`` backbone returns (``[in_features]`` for other backbones).
loss
    ``factory(embedding_size: int, num_classes: int, **options) -> torch.nn.Module`` called as
    ``loss(embeddings [B, E], labels int64 [B]) -> scalar tensor``. It owns any classifier head
    (margin weights), which is trained but never used at inference. A factory that names a
    ``class_counts`` parameter also gets the training images per class (a list, by class index),
    e.g. for per-class margins.
postprocess
    ``factory(**options) -> step`` where ``step(ctx: core.retrieval.RetrievalContext) -> ctx``.
    The config lists steps, applied in order; a ranking step fills ``ctx.ranked`` (per query:
    database image ids and scores in [0, 1], best first), later steps may re-rank it. ``ctx.query_files``
    and ``ctx.db_files`` name the photo files where the caller knows them (validation, ``main.py``), for
    steps that read the photos themselves. A step fitted on validation whales has ``fit(records, truth)``
    returning its fitted options, ``record`` (a list it fills while ranking), ``needs_top_k`` and
    ``fitted_keys``; the runner fits it after training (``core.training.fit``). ``core.contracts.FittedStep``
    states that interface and its contract check fits such a step on a tiny set; ``LocalMatching`` states what
    the catalogue asks of a keypoint-matching step.
"""

import pluggy

PROJECT = "whaleid"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# The one list of hook points: each point's config key -> its registration hook (defined below).
HOOKS = {
    "dataset": "register_datasets",
    "backbone": "register_backbones",
    "neck": "register_necks",
    "loss": "register_losses",
    "postprocess": "register_postprocess",
}
HOOK_POINTS = tuple(HOOKS)
INFERENCE_POINTS = ("backbone", "neck", "postprocess")  # what a submission bundle runs (no dataset, no loss)


@hookspec
def register_datasets(register):
    """Register dataset factories: ``register("belugas", factory)``."""


@hookspec
def register_backbones(register):
    """Register backbone factories: ``register("timm", factory)``."""


@hookspec
def register_necks(register):
    """Register neck factories: ``register("gem_bn", factory)``."""


@hookspec
def register_losses(register):
    """Register loss factories: ``register("arcface_focal", factory)``."""


@hookspec
def register_postprocess(register):
    """Register postprocess step factories: ``register("knn", factory)``."""
