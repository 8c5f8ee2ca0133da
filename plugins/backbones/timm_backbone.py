"""Backbone ``timm``: any timm model, by name, returning a feature map, a pooled vector or stage maps.

Nothing is downloaded unless ``pretrained: true`` is asked for; ``weights`` loads a local file
(safetensors or a torch checkpoint) instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.hookspecs import hookimpl


class TimmBackbone(nn.Module):
    """``mode`` = "map": [B, C, h, w] from ``forward_features``; "pooled": [B, C] from timm's own
    pooling/head pre-logits; "stages": a list of [B, C_i, h_i, w_i] for ``out_indices``."""

    def __init__(self, model: str, pretrained=False, weights=None, mode="map", out_indices=None,
                 drop_rate=0.0, drop_path_rate=None, in_chans=3):
        super().__init__()
        import timm

        if mode not in ("map", "pooled", "stages"):
            raise ValueError(f"backbone 'timm' mode must be map, pooled or stages, got {mode!r}")
        kwargs = dict(pretrained=pretrained, in_chans=in_chans, drop_rate=drop_rate)
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
        if weights:
            load_local_weights(self.model, weights)
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


def load_local_weights(model: nn.Module, path: str) -> None:
    """Load a local safetensors / torch file, ignoring classifier keys the headless model lacks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from core.weights import read_safetensors

        state = read_safetensors(path)
    else:
        import inspect

        if "weights_only" not in inspect.signature(torch.load).parameters:  # torch < 1.13 can only unpickle
            raise ValueError(f"{path}: torch {torch.__version__} cannot read a torch checkpoint without running "
                             "pickled code; convert it to .safetensors")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor matches the model's parameter names and shapes")
    model.load_state_dict(usable, strict=False)


@hookimpl
def register_backbones(register):
    register("timm", TimmBackbone)
