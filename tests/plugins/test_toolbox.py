"""The winners' toolbox (docs/winners.md): each plugin's shapes, autocast dtype and a hand-computed
value; re-rank steps keep the output valid; the winners' configs train a CPU step."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from core.plugins import build_registries
from core.retrieval import RetrievalContext, rank_scenario
from tests.helpers import ROOT, assert_metrics_recomputed, run_core


@pytest.fixture(scope="module")
def reg():
    return build_registries()


# ---- losses --------------------------------------------------------------------------------------

def test_adaptive_margins_match_the_winners_formulas():
    from plugins.losses.margins import adaptive_margins

    second = adaptive_margins([1, 106], "2nd")
    assert second[0] == pytest.approx(0.55) and second[1] == pytest.approx(0.5 * 106 ** -0.125 + 0.05)
    assert second[1] == pytest.approx(0.33, abs=0.005)  # WINNERS.md: "about 0.33 for the 106-image whale"
    fourth = adaptive_margins([1, 16, 81], "4th")
    x = np.array([1, 16, 81], float) ** -0.25  # 1, 0.5, 0.333
    assert fourth == pytest.approx(0.05 + 0.3 * (x - x.min()) / (x.max() - x.min()))
    assert fourth[0] == pytest.approx(0.35) and fourth[2] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="adaptive_margin"):
        adaptive_margins([1, 2], "5th")


@pytest.mark.parametrize("spec", [
    {"name": "arcface"}, {"name": "cosface"}, {"name": "elastic_arcface"},
    {"name": "subcenter_arcface", "k": 2}, {"name": "subcenter_arcface", "k": 1, "adaptive_margin": "4th"},
    {"name": "subcenter_arcface", "k": 3, "adaptive_margin": "2nd"}])
def test_losses_train_and_keep_float32_under_autocast(reg, spec):
    torch.manual_seed(0)
    loss = reg["loss"].build(spec, optional={"class_counts": [1, 5, 20]}, embedding_size=8, num_classes=3)
    emb = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(emb.bfloat16(), labels)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_arc_margin_hand_value():
    from plugins.losses.margins import arc_logits

    cos = torch.tensor([[0.5, 0.2]])
    logits = arc_logits(cos, torch.tensor([0]), 0.3, s=10.0)
    assert float(logits[0, 0]) == pytest.approx(10 * math.cos(math.acos(0.5) + 0.3), abs=1e-5)
    assert float(logits[0, 1]) == pytest.approx(2.0, abs=1e-6)  # other classes: s * cos
    per_sample = arc_logits(torch.tensor([[0.5, 0.2], [0.5, 0.2]]), torch.tensor([0, 0]), torch.tensor([0.0, 0.3]), s=1.0)
    assert float(per_sample[0, 0]) == pytest.approx(0.5)
    assert float(per_sample[1, 0]) == pytest.approx(float(logits[0, 0]) / 10, abs=1e-6)


def test_subcenter_takes_the_best_centre_and_uses_per_class_margins(reg):
    loss = reg["loss"].build({"name": "subcenter_arcface", "k": 2, "adaptive_margin": "2nd"},
                             optional={"class_counts": [1, 106]}, embedding_size=2, num_classes=2)
    with torch.no_grad():  # class 0: centres along +x and +y; class 1: along -x and -y
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    cos = loss.class_cosine(torch.tensor([[0.0, 2.0]]))
    assert cos.tolist() == [[1.0, 0.0]]
    assert loss.margins.tolist() == pytest.approx([0.55, 0.5 * 106 ** -0.125 + 0.05])


def test_elastic_margin_is_drawn_in_training_and_fixed_in_eval(reg):
    loss = reg["loss"].build({"name": "elastic_arcface", "sigma": 0.0125}, embedding_size=4, num_classes=3)
    torch.manual_seed(0)
    drawn = loss.margins(10000, "cpu")
    assert float(drawn.mean()) == pytest.approx(0.5, abs=0.001) and float(drawn.std()) == pytest.approx(0.0125, rel=0.05)
    loss.eval()
    assert torch.equal(loss.margins(3, "cpu"), torch.full((3,), 0.5))


def test_adaptive_margin_without_counts_fails_clearly(reg):
    with pytest.raises(ValueError, match="class_counts"):
        reg["loss"].build({"name": "subcenter_arcface", "adaptive_margin": "2nd"}, embedding_size=4, num_classes=3)


# ---- necks ---------------------------------------------------------------------------------------

def test_multi_gem_pools_each_stage_and_concatenates(reg):
    neck = reg["neck"].build({"name": "multi_gem"}, optional={"feature_channels": [3, 5]}, in_features=5).eval()
    maps = [torch.rand(2, 3, 4, 4) + 0.1, torch.rand(2, 5, 2, 2) + 0.1]
    out = neck(maps)
    assert out.shape == (2, 8) and neck.embedding_size == 8
    gem = [m.pow(3).mean(dim=(2, 3)).pow(1 / 3) for m in maps]
    bn = neck.bn
    expect = (torch.cat(gem, 1) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(out, expect, atol=1e-5)
    fc = reg["neck"].build({"name": "multi_gem", "embedding_size": 4}, optional={"feature_channels": [3, 5]}, in_features=5)
    assert fc(maps).shape == (2, 4)


def test_dolg_fusion_is_orthogonal_to_the_global_vector():
    from plugins.necks.dolg import orthogonal_fusion

    torch.manual_seed(0)
    local, g = torch.randn(2, 6, 3, 3), torch.randn(2, 6)
    fused = orthogonal_fusion(local, g)
    orth = fused[:, :6]
    projection = torch.einsum("bdhw,bd->bhw", orth, g)
    assert projection.abs().max() < 1e-4  # the local component has no part along the global vector
    assert torch.allclose(fused[:, 6:], g[:, :, None, None].expand(2, 6, 3, 3))
    # and what was removed is exactly the projection
    unit = g / g.norm(dim=1, keepdim=True)
    assert torch.allclose(local - orth, torch.einsum("bdhw,bd->bhw", local, unit)[:, None] * unit[:, :, None, None], atol=1e-5)


def test_dolg_shapes_and_autocast(reg):
    neck = reg["neck"].build({"name": "dolg", "embedding_size": 16, "dim": 8, "branch_channels": 4},
                             optional={"feature_channels": [6, 10]}, in_features=10)
    maps = [torch.randn(3, 6, 8, 8), torch.randn(3, 10, 4, 4)]
    assert neck(maps).shape == (3, 16) and neck(maps).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert neck(maps).shape == (3, 16)
    with pytest.raises(ValueError, match="two maps"):
        reg["neck"].build({"name": "dolg"}, optional={"feature_channels": [10]}, in_features=10)


# ---- postprocess ---------------------------------------------------------------------------------

def ctx_of(q, db, q_ids=None, db_ids=None, qv=None, dv=None):
    q, db = np.asarray(q, np.float32), np.asarray(db, np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q_ids = q_ids or [f"q{i}" for i in range(len(q))]
    db_ids = db_ids or [f"d{i}" for i in range(len(db))]
    ctx = RetrievalContext([f"s-{i}" for i in q_ids], list(q_ids), list(db_ids), q, db, scenario="s")
    ctx.query_viewpoints, ctx.db_viewpoints = qv, dv
    return ctx


def test_db_anchor_rerank_hand_computed_on_three_images(reg):
    step = reg["postprocess"].build({"name": "db_anchor_rerank", "power": 1.0})
    # query q, database a (the best), b, c; unit vectors in 2-D at known angles
    ang = {"q": 0.0, "a": 0.2, "b": 0.5, "c": 1.4}
    vec = {k: [math.cos(v), math.sin(v)] for k, v in ang.items()}
    ctx = step(ctx_of([vec["q"]], [vec["a"], vec["b"], vec["c"]], ["q"], ["a", "b", "c"]))
    cos = lambda x, y: max(0.0, math.cos(ang[x] - ang[y]))  # noqa: E731
    expect = {d: 0.4 * cos("q", d) + 0.4 * cos("a", d) + 0.2 * cos("b", d) for d in "abc"}
    idx, scores = ctx.ranked[0]
    got = {ctx.db_image_ids[i]: s for i, s in zip(idx, scores)}
    assert got == pytest.approx(expect)
    assert [ctx.db_image_ids[i] for i in idx] == sorted(expect, key=lambda d: -expect[d])
    # lateral -> top scenarios take the other weights
    lt = step(ctx_of([vec["q"]], [vec["a"], vec["b"], vec["c"]], ["q"], ["a", "b", "c"], ["left"], ["top"] * 3))
    assert lt.kind() == "lateral_top"
    assert dict(zip([lt.db_image_ids[i] for i in lt.ranked[0][0]], lt.ranked[0][1]))["c"] == pytest.approx(
        0.2 * cos("q", "c") + 0.4 * cos("a", "c") + 0.4 * cos("b", "c"))


def test_k_reciprocal_sets_on_a_constructed_neighbourhood():
    from plugins.postprocess.k_reciprocal import reciprocal_sets

    # points on a line: 0, 1, 2 close together, 10 far away
    x = np.array([0.0, 1.0, 2.0, 10.0])
    dist = np.abs(x[:, None] - x[None, :])
    sets = reciprocal_sets(dist, 1)
    # nearest of 0 is 1 and of 1 is 0 (tie with 2 broken by order); 2's nearest is 1 but 1's is 0; 10's is 2
    assert [s.tolist() for s in sets] == [[0, 1], [0, 1], [2], [3]]
    sets2 = reciprocal_sets(dist, 2)
    assert sets2[0].tolist() == [0, 1, 2] and sets2[3].tolist() == [3]


def test_k_reciprocal_ranks_the_querys_reciprocal_cluster_first(reg):
    """Two tight clusters A and B and a query inside A: the re-ranked list starts with all of A."""
    rng = np.random.default_rng(0)
    a_centre, b_centre = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    a = a_centre + 0.02 * rng.normal(size=(6, 3))
    b = b_centre + 0.02 * rng.normal(size=(6, 3))
    query = a_centre + 0.02 * rng.normal(size=3)
    step = reg["postprocess"].build({"name": "k_reciprocal", "k1": 4, "k2": 2, "lam": 0.1})
    ctx = step(ctx_of([query], np.vstack([a, b])))
    top = [ctx.db_image_ids[i] for i in ctx.ranked[0][0][:6]]
    assert set(top) == {f"d{i}" for i in range(6)}  # the whole A cluster first


@pytest.mark.parametrize("spec", [{"name": "db_anchor_rerank"}, {"name": "k_reciprocal", "k1": 5, "k2": 3},
                                  [{"name": "query_expansion", "k": 2}, {"name": "knn"}],
                                  [{"name": "database_augmentation", "k": 2}, {"name": "knn"}]])
def test_rerank_steps_keep_the_output_valid(reg, spec):
    from core.metric import validate_predictions

    rng = np.random.default_rng(1)
    db = rng.normal(size=(40, 8))
    ids = [f"img{i}" for i in range(40)]
    q_ids = ids[:10] + ["new0", "new1"]  # ten queries are themselves in the database
    q = np.vstack([db[:10], rng.normal(size=(2, 8))])
    steps = [reg["postprocess"].build(s) for s in (spec if isinstance(spec, list) else [spec])]
    frame = rank_scenario(ctx_of(q, db, q_ids, ids), steps)
    validate_predictions(frame, {f"s-{i}": i for i in q_ids})  # <= 20 rows, scores in [0, 1], never the query
    assert frame.groupby("query_id").size().eq(20).all()
    empty = rank_scenario(ctx_of(q[:1], db[:0].reshape(0, 8), q_ids[:1], []), steps)
    assert len(empty) == 0


def test_query_expansion_and_dba_equal_expand_with_one_side(reg):
    rng = np.random.default_rng(2)
    db, q = rng.normal(size=(12, 4)), rng.normal(size=(3, 4))
    qe = reg["postprocess"].build({"name": "query_expansion", "k": 2, "alpha": 2.0})(ctx_of(q, db))
    ex = reg["postprocess"].build({"name": "expand", "db_k": 0, "query_k": 2, "alpha": 2.0})(ctx_of(q, db))
    assert np.allclose(qe.query_emb, ex.query_emb)
    dba = reg["postprocess"].build({"name": "database_augmentation", "k": 2, "alpha": 2.0})(ctx_of(q, db))
    ex2 = reg["postprocess"].build({"name": "expand", "db_k": 2, "query_k": 0, "alpha": 2.0})(ctx_of(q, db))
    assert np.allclose(dba.db_emb, ex2.db_emb) and np.allclose(dba.query_emb, ex2.query_emb)


# ---- dataset options and runner ------------------------------------------------------------------

def test_min_images_per_whale_drops_rare_whales_from_training_only(tiny_survey):
    data = build_registries()["dataset"].build({"name": "belugas", "min_images_per_whale": 4},
                                               root=str(tiny_survey / "train"), image_size=[32, 32])
    plain = build_registries()["dataset"].build({"name": "belugas"}, root=str(tiny_survey / "train"), image_size=[32, 32])
    train, val = data.split(3, 0, True, 42)
    train0, val0 = plain.split(3, 0, True, 42)
    assert val.equals(val0)
    assert train["whale_id"].value_counts().min() >= 4
    dropped = set(train0["whale_id"]) - set(train["whale_id"])
    assert dropped and all(train0["whale_id"].value_counts()[w] < 4 for w in dropped)


def test_landscape_images_are_rotated_clockwise():
    from PIL import Image

    from core.images import portrait

    img = Image.new("RGB", (4, 2))
    img.putpixel((0, 0), (255, 0, 0))  # top-left of a landscape image
    out = portrait(img)
    assert out.size == (2, 4) and out.getpixel((1, 0)) == (255, 0, 0)  # clockwise: top-left goes top-right
    tall = Image.new("RGB", (2, 4))
    assert portrait(tall) is tall


def test_group_learning_rates(tiny_survey):
    from omegaconf import OmegaConf

    from core.training.loop import TrainStep, make_optimizer, parameter_groups

    r = build_registries()
    model = torch.nn.Module()
    model.backbone, model.neck = torch.nn.Linear(2, 3), torch.nn.Linear(3, 4)
    trainer = TrainStep(model, r["loss"].build({"name": "arcface"}, embedding_size=4, num_classes=2))
    cfg = OmegaConf.create({"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "group_lr": {"neck": 1e-2, "head": 5e-2}})
    opt = make_optimizer(cfg, parameter_groups(trainer))
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"backbone": 1e-3, "neck": 1e-2, "head": 5e-2}
    with pytest.raises(ValueError, match="group_lr names"):
        make_optimizer(OmegaConf.create({**OmegaConf.to_container(cfg), "group_lr": {"bakbone": 1.0}}), parameter_groups(trainer))


@pytest.mark.parametrize("config", ["1st/tf_efficientnet_b5_ns", "2nd/tf_efficientnet_b3_ns", "4th/tf_efficientnet_b7_ns_256"])
def test_winners_configs_train_a_step(config, recipe_run):
    """Each place's recipe, shrunk to one CPU step on tiny data with random weights."""
    metrics = assert_metrics_recomputed(recipe_run(f"winners/{config}"))
    assert metrics["epoch"] == 1 and metrics["steps"] == 1


def test_bundled_builtin_plugins_bring_the_plugin_modules_they_import():
    from submission.build import plugin_files

    assert set(plugin_files("plugins.postprocess.query_expansion")) == {
        "plugins/postprocess/query_expansion.py", "plugins/postprocess/neighbours.py"}
    assert set(plugin_files("plugins.necks.multi_gem")) == {"plugins/necks/multi_gem.py", "plugins/necks/pooling.py"}


def test_viewpoint_weights_pick_models_per_scenario_kind(smoke_run, tiny_survey, tmp_path):
    """Two models (the smoke run and a perturbed copy). With viewpoint weights that give top->top scenarios
    only the first model, those scenarios rank exactly as a bundle of the first model alone; the other
    kinds keep the default 1/1 mix and rank differently."""
    import shutil

    from safetensors.torch import load_file, save_file

    from core.inference import run
    from core.retrieval import viewpoint_kind
    from submission.build import BuildError, build

    other = tmp_path / "other"
    shutil.copytree(smoke_run, other)
    weights = load_file(other / "best.safetensors")
    torch.manual_seed(0)
    save_file({k: (v + 0.5 * torch.randn_like(v) * v.std() if v.is_floating_point() and v.numel() > 1 else v)
               for k, v in weights.items()}, other / "best.safetensors")
    zips = {}
    for name, runs, view in (("single", [smoke_run], None), ("both", [smoke_run, other], {"top_top": [1.0, 0.0]})):
        zips[name] = tmp_path / f"{name}.zip"
        build(runs, zips[name], viewpoint_weights=view)
    outs = {}
    for name, z in zips.items():
        root = tmp_path / f"x_{name}"
        zipfile.ZipFile(z).extractall(root)
        assert run(root, tiny_survey / "test", root / "s.csv", num_workers=0)["status"] == "ok"
        outs[name] = pd.read_csv(root / "s.csv", dtype=str)
    meta = pd.read_csv(tiny_survey / "test" / "metadata.csv", dtype=str)
    views = dict(zip(meta.image_id, meta.viewpoint))
    from core.scenarios import read_scenarios

    kinds = {}
    for sc in read_scenarios(tiny_survey / "test"):
        kind = viewpoint_kind([views[i] for i in sc.queries.query_image_id], [views[i] for i in sc.database.database_image_id])
        kinds.update({q: kind for q in sc.queries.query_id})
    for name in outs:
        outs[name]["kind"] = outs[name]["query_id"].map(kinds)
    tt = [o[o.kind == "top_top"].drop(columns="kind").reset_index(drop=True) for o in (outs["single"], outs["both"])]
    assert len(tt[0]) and tt[0].equals(tt[1])
    rest = [o[o.kind != "top_top"].reset_index(drop=True) for o in (outs["single"], outs["both"])]
    assert len(rest[0]) and not rest[0].equals(rest[1])
    with pytest.raises(BuildError, match="unknown scenario kind"):
        build([smoke_run], tmp_path / "bad.zip", viewpoint_weights={"top_to_top": [1.0]})
    with pytest.raises(BuildError, match="one per --run"):
        build([smoke_run, other], tmp_path / "bad.zip", viewpoint_weights={"top_top": [1.0]})
