"""The example plugin's own tests: each component alone, through whaleid's registries."""

import numpy as np
import torch

from core.plugins import build_registries
from core.retrieval import RetrievalContext


def registries():
    return build_registries(["whaleid_example"])


def test_components_are_registered_once_with_their_module():
    reg = registries()
    assert reg["neck"].providers["mean_max"] == "whaleid_example"
    assert reg["loss"].providers["normface"] == "whaleid_example"
    assert reg["postprocess"].providers["alpha_qe"] == "whaleid_example"


def test_mean_max_neck_on_maps_vectors_and_stages():
    neck = registries()["neck"].build({"name": "mean_max", "embedding_size": 8}, in_features=4).eval()
    fmap = torch.randn(3, 4, 5, 5)
    assert neck(fmap).shape == (3, 8)
    assert neck(torch.randn(3, 4)).shape == (3, 8)
    assert torch.allclose(neck([torch.randn(3, 2, 5, 5), fmap]), neck(fmap))


def test_normface_scale_sharpens_the_loss_and_trains():
    torch.manual_seed(0)
    reg = registries()["loss"]
    emb, labels = torch.randn(6, 8, requires_grad=True), torch.tensor([0, 1, 2, 0, 1, 2])
    low = reg.build({"name": "normface", "s": 1.0}, embedding_size=8, num_classes=3)
    high = reg.build({"name": "normface", "s": 30.0}, embedding_size=8, num_classes=3)
    high.weight.data.copy_(low.weight.data)
    assert abs(float(low(emb, labels)) - float(torch.log(torch.tensor(3.0)))) < 1.0  # near uniform at s=1
    loss = high(emb, labels)
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_alpha_qe_pulls_a_query_toward_its_neighbours_and_skips_its_own_image():
    step = registries()["postprocess"].build({"name": "alpha_qe", "k": 1, "alpha": 1.0})
    q = np.array([[1.0, 0.0]], np.float32)
    db = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32)
    ctx = step(RetrievalContext(["q"], ["a"], ["a", "b", "c"], q.copy(), db))
    expect = q[0] + 0.6 * db[1]  # image a is the query's own: its neighbour is b
    assert np.allclose(ctx.query_emb[0], expect / np.linalg.norm(expect), atol=1e-6)
    zero = registries()["postprocess"].build({"name": "alpha_qe", "k": 0})
    assert np.array_equal(zero(RetrievalContext(["q"], ["a"], ["a", "b", "c"], q.copy(), db)).query_emb, q)
