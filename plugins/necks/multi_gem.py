"""Neck ``multi_gem`` (2nd place): GeM on several stage maps of a ``features_only`` backbone, concatenated,
BatchNorm1d; optionally a Linear to ``embedding_size`` first.

2nd place: timm ``features_only`` with ``out_indices=(3, 4)`` (strides 16 and 32), GeM with fixed p=3 on
each, concatenation and BN; the BN output is the embedding (472-688 dims). Use it with
``backbone: {name: timm, mode: stages, out_indices: [3, 4]}``; the runner passes the stage channels
(``feature_channels``). ``stages`` picks which maps to pool (default: all the backbone returns).
"""

from __future__ import annotations

import torch
from torch import nn

from core.hookspecs import hookimpl
from plugins.necks.pooling import GeM


class MultiGeM(nn.Module):
    def __init__(self, in_features: int, feature_channels=None, embedding_size: int | None = None, p: float = 3.0,
                 learnable_p: bool = False, stages=None):
        super().__init__()
        channels = list(feature_channels or [in_features])
        self.stages = list(stages) if stages is not None else list(range(len(channels)))
        if not self.stages or any(not -len(channels) <= s < len(channels) for s in self.stages):
            raise ValueError(f"neck 'multi_gem' stages {self.stages} do not index the backbone's {len(channels)} maps")
        width = sum(channels[s] for s in self.stages)
        self.pools = nn.ModuleList(GeM(p, learnable=learnable_p) for _ in self.stages)
        self.fc = nn.Linear(width, int(embedding_size)) if embedding_size else nn.Identity()
        self.embedding_size = int(embedding_size) if embedding_size else width
        self.bn = nn.BatchNorm1d(self.embedding_size)

    def forward(self, features) -> torch.Tensor:
        maps = list(features) if isinstance(features, (list, tuple)) else [features]
        pooled = [pool(maps[s]) if maps[s].ndim == 4 else maps[s] for pool, s in zip(self.pools, self.stages)]
        return self.bn(self.fc(torch.cat(pooled, dim=1)))


@hookimpl
def register_necks(register):
    register("multi_gem", MultiGeM)
