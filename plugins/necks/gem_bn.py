"""Neck ``gem_bn`` (the seed's): GeM pooling (learnable p) -> dropout -> Linear -> BatchNorm1d."""

from __future__ import annotations

import torch
from torch import nn

from core.hookspecs import hookimpl
from plugins.necks.pooling import GeM


class GemBnNeck(nn.Module):
    """Takes a [B, C, h, w] map (pooled by GeM), a pooled [B, C] vector (used as is) or a list of
    stage maps (the last is used); returns float32 [B, embedding_size]."""

    def __init__(self, in_features: int, embedding_size: int = 512, dropout: float = 0.0, p: float = 3.0,
                 learnable_p: bool = True):
        super().__init__()
        self.pool = GeM(p, learnable=learnable_p)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, embedding_size)
        self.bn = nn.BatchNorm1d(embedding_size)
        self.embedding_size = embedding_size

    def forward(self, features) -> torch.Tensor:
        if isinstance(features, (list, tuple)):
            features = features[-1]
        if features.ndim == 4:
            features = self.pool(features)
        return self.bn(self.fc(self.dropout(features)))


@hookimpl
def register_necks(register):
    register("gem_bn", GemBnNeck)
