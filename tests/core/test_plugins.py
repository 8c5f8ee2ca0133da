"""Each built-in plugin alone, and a user's drop-in plugin."""

import sys
from pathlib import Path
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from core.plugins import build_registries
from core.retrieval import RetrievalContext, combine_embeddings, rank_scenario


@pytest.fixture(scope="module")
def reg():
    return build_registries()


def test_timm_backbone_modes(reg):
    x = torch.randn(2, 3, 64, 64)
    fmap = reg["backbone"].build({"name": "timm", "model": "resnet18"})
    assert fmap(x).shape == (2, fmap.num_features, 2, 2)
    pooled = reg["backbone"].build({"name": "timm", "model": "resnet18", "mode": "pooled"})
    assert pooled(x).shape == (2, 512)
    stages = reg["backbone"].build({"name": "timm", "model": "resnet18", "mode": "stages", "out_indices": [2, 3, 4]})
    outs = stages(x)
    assert [o.shape[1] for o in outs] == stages.feature_channels == [128, 256, 512]


def test_timm_backbone_local_weights(reg, tmp_path):
    from safetensors.torch import save_file

    src = reg["backbone"].build({"name": "timm", "model": "resnet18"})
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    dst = reg["backbone"].build({"name": "timm", "model": "resnet18", "weights": str(tmp_path / "w.safetensors")})
    assert torch.equal(dst.model.conv1.weight, src.model.conv1.weight)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        reg["backbone"].build({"name": "timm", "model": "resnet18", "weights": str(tmp_path / "missing.safetensors")})


def test_gem_bn_neck_shapes_and_gem_value(reg):
    neck = reg["neck"].build({"name": "gem_bn", "embedding_size": 16}, in_features=8).eval()
    assert neck(torch.rand(4, 8, 5, 5)).shape == (4, 16)
    assert neck(torch.rand(4, 8)).shape == (4, 16)
    assert neck([torch.rand(4, 3, 9, 9), torch.rand(4, 8, 5, 5)]).shape == (4, 16)
    x = torch.full((1, 1, 2, 2), 2.0)
    assert neck.pool(x).item() == pytest.approx(2.0, rel=1e-5)  # GeM of a constant is the constant


def test_arcface_focal_loss(reg):
    torch.manual_seed(0)
    loss = reg["loss"].build({"name": "arcface_focal"}, embedding_size=8, num_classes=5)
    emb, labels = torch.randn(10, 8, requires_grad=True), torch.randint(0, 5, (10,))
    value = loss(emb, labels)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and emb.grad is not None
    # embeddings on their class weights score lower loss than random ones
    aligned = loss.head.weight.detach()[labels] * 5
    assert loss(aligned, labels) < value
    # the head stays float32 under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(emb.bfloat16(), labels).dtype == torch.float32


def test_focal_gamma_zero_is_smoothed_cross_entropy(reg):
    loss = reg["loss"].build({"name": "arcface_focal", "gamma": 0.0, "m": 0.0, "ls_eps": 0.1}, embedding_size=4, num_classes=3)
    emb, labels = torch.randn(6, 4), torch.randint(0, 3, (6,))
    logits = loss.head(emb, labels)
    ref = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert loss(emb, labels).item() == pytest.approx(ref.item(), rel=1e-5)


def ctx_for(q_ids, q_imgs, db_ids, q, db):
    return RetrievalContext(q_ids, q_imgs, db_ids, np.asarray(q, np.float32), np.asarray(db, np.float32))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_removes_query_image_and_keeps_top_k(reg, backend):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(30, 8)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    db_ids = [f"d{i}" for i in range(30)]
    step = reg["postprocess"].build({"name": "knn", "top_k": 20, "backend": backend})
    frame = rank_scenario(ctx_for(["s-d3", "s-x"], ["d3", "x"], db_ids, db[[3, 5]], db), [step])
    first = frame[frame.query_id == "s-d3"]
    assert len(first) == 20 and "d3" not in set(first.database_image_id)
    second = frame[frame.query_id == "s-x"]
    assert second.iloc[0].database_image_id == "d5" and second.score.iloc[0] == pytest.approx((1 + 1) * 0.49)
    assert frame.score.between(0, 1).all()
    assert (np.diff(second.score.to_numpy()) <= 0).all()


def test_knn_empty_and_self_only_databases(reg):
    step = reg["postprocess"].build({"name": "knn"})
    frame = rank_scenario(ctx_for(["s-a"], ["a"], ["a"], [[1, 0]], [[1, 0]]), [step])
    assert len(frame) == 0
    frame = rank_scenario(ctx_for(["s-a"], ["a"], [], [[1, 0]], np.zeros((0, 2))), [step])
    assert len(frame) == 0


def test_combine_embeddings_is_weighted_mean_of_cosines():
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=(5, 4)) for _ in range(2))
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    c = combine_embeddings([a, b], [1.0, 0.75])
    expected = (1.0 * a @ a.T + 0.75 * b @ b.T) / 1.75
    assert np.allclose(c @ c.T, expected, atol=1e-5)
    with pytest.raises(ValueError):
        combine_embeddings([a, b], [1.0])


def test_drop_in_plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_whale_plugin.py").write_text(textwrap.dedent('''
        import torch
        from core.hookspecs import hookimpl

        class MeanNeck(torch.nn.Module):
            def __init__(self, in_features, embedding_size=4):
                super().__init__()
                self.fc = torch.nn.Linear(in_features, embedding_size)
                self.embedding_size = embedding_size
            def forward(self, x):
                return self.fc(x.mean(dim=(2, 3)))

        @hookimpl
        def register_necks(register):
            register("mean", MeanNeck)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = build_registries(["my_whale_plugin"])
    assert reg["neck"].providers["mean"] == "my_whale_plugin"
    neck = reg["neck"].build({"name": "mean", "embedding_size": 3}, in_features=8)
    assert neck(torch.rand(2, 8, 3, 3)).shape == (2, 3)
    sys.modules.pop("my_whale_plugin", None)


def test_knn_auto_falls_back_to_torch_without_faiss(reg, monkeypatch):
    assert reg["postprocess"].build({"name": "knn"}).backend == "faiss"
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    assert reg["postprocess"].build({"name": "knn"}).backend == "torch"


def test_focal_reductions_match_hand_computed_values(reg):
    """Two samples whose smoothed cross-entropies are known: ce = (1, 3), gamma = 2.

    batch (the seed's): ce_mean = 2, loss = (1 - e^-2)^2 * 2 = 1.4952901...
    sample: mean((1 - e^-1)^2 * 1, (1 - e^-3)^2 * 3) = (0.3995764 + 2.7087139) / 2 = 1.5541451...
    """
    import math

    from plugins.losses.arcface_focal import focal_term

    ce = torch.tensor([1.0, 3.0])
    assert focal_term(ce.mean(), 2.0).item() == pytest.approx((1 - math.exp(-2)) ** 2 * 2, rel=1e-6)
    assert focal_term(ce.mean(), 2.0).item() == pytest.approx(1.4952901, rel=1e-6)
    assert focal_term(ce, 2.0).mean().item() == pytest.approx(1.5541451, rel=1e-6)
    # through the loss module: logits built by the head, cross-entropy computed here by hand
    torch.manual_seed(0)
    emb, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    by = {r: reg["loss"].build({"name": "arcface_focal", "gamma": 6.0, "ls_eps": 0.2, "reduction": r},
                               embedding_size=4, num_classes=3) for r in ("batch", "sample")}
    by["sample"].head.load_state_dict(by["batch"].head.state_dict())
    logits = by["batch"].head(emb, labels)
    logp = torch.log_softmax(logits, dim=1)
    ce = -(0.8 * logp.gather(1, labels[:, None])[:, 0] + 0.2 * logp.mean(dim=1))  # label smoothing 0.2 over 3 classes
    assert by["batch"](emb, labels).item() == pytest.approx(((1 - torch.exp(-ce.mean())) ** 6 * ce.mean()).item(), rel=1e-5)
    assert by["sample"](emb, labels).item() == pytest.approx(((1 - torch.exp(-ce)) ** 6 * ce).mean().item(), rel=1e-5)
    assert by["batch"](emb, labels).item() != pytest.approx(by["sample"](emb, labels).item(), rel=1e-3)
    with pytest.raises(ValueError, match="reduction"):
        reg["loss"].build({"name": "arcface_focal", "reduction": "sum"}, embedding_size=4, num_classes=3)


def test_seed_configs_reduce_focal_over_the_batch():
    from core.config import load_config

    root = Path(__file__).resolve().parent.parent.parent / "configs" / "seed_3rd_place"
    for name in ("convnext_large", "tf_efficientnet_b5_ns", "tf_efficientnet_b7_ns"):
        cfg = load_config(root / f"{name}.yaml")
        assert cfg.loss.reduction == "batch" and cfg.loss.gamma == 6.0 and cfg.loss.ls_eps == 0.2


def unit(*rows):
    a = np.asarray(rows, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_expand_hand_computed_and_never_uses_the_query_image(reg):
    step = reg["postprocess"].build({"name": "expand", "db_k": 1, "query_k": 1, "alpha": 1.0})
    db = unit([1, 0], [0.8, 0.6], [0, 1])
    ctx = ctx_for(["s-q"], ["a"], ["a", "b", "c"], unit([1, 0]), db)
    out = step(ctx)
    # DBA: a's nearest other row is b (cos 0.8): a' = a + 0.8 b; b's is a: b' = b + 0.8 a; c's is b (cos 0.6)
    a2 = db[0] + 0.8 * db[1]
    b2 = db[1] + 0.8 * db[0]
    c2 = db[2] + 0.6 * db[1]
    expect_db = unit(a2, b2, c2)
    assert np.allclose(out.db_emb, expect_db, atol=1e-6)
    # the query is image a: it starts from a' and expands with its nearest row other than a itself (b')
    q = expect_db[0] + float(expect_db[0] @ expect_db[1]) * expect_db[1]
    assert np.allclose(out.query_emb, unit(q), atol=1e-6)
    assert np.allclose(np.linalg.norm(out.query_emb, axis=1), 1) and np.allclose(np.linalg.norm(out.db_emb, axis=1), 1)


def test_expand_with_zero_neighbours_changes_nothing_and_handles_empty(reg):
    step = reg["postprocess"].build({"name": "expand", "db_k": 0, "query_k": 0})
    db, q = unit([1, 0], [0, 1]), unit([1, 1])
    out = step(ctx_for(["s-q"], ["x"], ["a", "b"], q, db))
    assert np.array_equal(out.db_emb, db) and np.array_equal(out.query_emb, q)
    empty = step(ctx_for(["s-q"], ["x"], [], q, np.zeros((0, 2), np.float32)))
    assert empty.db_emb.shape == (0, 2)
    with pytest.raises(ValueError, match="db_k"):
        reg["postprocess"].build({"name": "expand", "db_k": -1})


def test_expand_pulls_a_burst_together(reg):
    # the query is close to frame b1 of a whale; its frame b2 is closer to b1 than to the query, and
    # two decoys x, y are closer to the query than b2 is: plain kNN ranks b2 last, expansion second
    q = unit([1, 0.2, 0])
    db = unit([1, 0.3, 0], [0.4, 1, 0], [0.7, -0.2, 0.7], [0.7, -0.2, -0.7])
    ids = ["b1", "b2", "x", "y"]
    knn = reg["postprocess"].build({"name": "knn", "top_k": 4, "backend": "torch"})
    assert list(knn(ctx_for(["s-q"], ["q"], ids, q, db)).ranked[0][0])[-1] == 1
    ctx = ctx_for(["s-q"], ["q"], ids, q, db)
    for step in (reg["postprocess"].build({"name": "expand", "db_k": 1, "query_k": 1, "alpha": 1.0}), knn):
        ctx = step(ctx)
    assert list(ctx.ranked[0][0])[:2] == [0, 1]


def test_expand_in_chunks_equals_all_at_once():
    """Neighbour weighting from the streaming top-k, in any blocks, equals a dense reference written out here."""
    from plugins.postprocess.neighbours import weighted_neighbours

    rng = np.random.default_rng(1)
    pool = unit(*rng.normal(size=(50, 8))).astype(np.float32)
    ids = np.asarray([f"i{k}" for k in range(50)], dtype=object)
    sims = pool @ pool.T
    np.fill_diagonal(sims, -np.inf)  # its own image is never a neighbour
    top = np.argsort(-sims, axis=1)[:, :3]
    w = np.clip(np.take_along_axis(sims, top, 1), 0, None) ** 3.0
    dense = pool + np.einsum("ak,akd->ad", w, pool[top])
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    whole = weighted_neighbours(pool, pool, 3, 3.0, ids, ids)
    assert np.allclose(whole, dense, atol=1e-6)
    assert np.allclose(whole, weighted_neighbours(pool, pool, 3, 3.0, ids, ids, chunks=(7, 5)), atol=1e-6)


def test_builtins_are_found_like_any_plugin_and_helpers_are_public():
    """Every module under plugins/ that implements a hook is a built-in (a new built-in is one file); helper
    modules have no hook, and no plugin imports another plugin's private name."""
    import ast
    from pathlib import Path

    from core.plugins import builtin_plugins

    found = builtin_plugins()
    assert "plugins.necks.gem_bn" in found and "plugins.postprocess.knn" in found
    assert "plugins.necks.pooling" not in found and "plugins.backbones.weight_sources" not in found
    for path in (Path(__file__).resolve().parent.parent.parent / "plugins").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("plugins."):
                assert not any(a.name.startswith("_") for a in node.names), (path, node.module)
