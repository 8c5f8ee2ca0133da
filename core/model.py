"""The embedding model: a backbone followed by a neck, built from the config's component nodes."""

from __future__ import annotations

import torch
from torch import nn

from core.config import component
from core.plugins import Registry


class EmbeddingModel(nn.Module):
    """float32 [B, 3, h, w] images -> float32 [B, E] embeddings (not normalised)."""

    def __init__(self, backbone: nn.Module, neck: nn.Module):
        super().__init__()
        self.backbone, self.neck = backbone, neck

    @property
    def embedding_size(self) -> int:
        return int(self.neck.embedding_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))


def load_weights(model: torch.nn.Module, path) -> None:
    """Load a safetensors state dict saved by the runner (read by ``core.weights``, so the 2022 runtime's
    torch 1.8 can too); a missing file is named."""
    from core.weights import read_safetensors

    model.load_state_dict(read_safetensors(path))


def build_model(cfg, registries: dict[str, Registry]) -> EmbeddingModel:
    backbone = registries["backbone"].build(component(cfg, "backbone"))
    # feature_channels (channels of each map a "stages" backbone returns) goes to necks that ask for it
    channels = [int(c) for c in getattr(backbone, "feature_channels", [backbone.num_features])]
    neck = registries["neck"].build(component(cfg, "neck"), optional={"feature_channels": channels},
                                    in_features=int(backbone.num_features))
    return EmbeddingModel(backbone, neck)
