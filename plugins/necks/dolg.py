"""Neck ``dolg`` (4th place): DOLG (Yang et al., ICCV 2021), deep orthogonal fusion of local and global
features, then Linear, BatchNorm1d and PReLU.

- Local branch, on the second-to-last stage map (stride 16): parallel 3x3 dilated convolutions
  (4th place: dilations 5, 7, 11, 17, 19, 23, 25 with 512 channels each), concatenated, a 1x1 conv
  to ``dim`` and ReLU; spatial attention multiplies the L2-normalised map by a softplus score.
- Global branch, on the last map (stride 32): 1x1 conv to ``dim``, BN, SiLU, global average pooling.
- Orthogonal fusion: each local vector minus its projection on the global vector, concatenated with the
  global vector (2 * dim), averaged over positions.
- Linear(2 * dim -> embedding_size), BatchNorm1d, PReLU (4th place: 1024-d).

Use with ``backbone: {name: timm, mode: stages, out_indices: [3, 4]}`` (any two maps, the last being
the global one). The defaults are CPU-sized; the 4th place's are in ``configs/winners/4th``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.hookspecs import hookimpl


def orthogonal_fusion(local: torch.Tensor, global_vec: torch.Tensor) -> torch.Tensor:
    """[B, D, h, w] local map and [B, D] global vector -> [B, 2D, h, w]: the local component orthogonal
    to the global vector, and the global vector at every position."""
    g = global_vec.float()
    unit = g / g.norm(dim=1, keepdim=True).clamp(min=1e-6)
    proj = torch.einsum("bdhw,bd->bhw", local.float(), unit)[:, None] * unit[:, :, None, None]
    orth = local.float() - proj
    return torch.cat([orth, g[:, :, None, None].expand_as(orth)], dim=1).to(local.dtype)


class DOLG(nn.Module):
    def __init__(self, in_features: int, feature_channels=None, embedding_size: int = 256, dim: int = 256,
                 dilations=(3, 6, 9), branch_channels: int = 64):
        super().__init__()
        channels = list(feature_channels or [in_features])
        if len(channels) < 2:
            raise ValueError("neck 'dolg' needs two maps (a stride-16 and a stride-32 one): use a timm backbone "
                             "with mode: stages and out_indices such as [3, 4]")
        c_local, c_global = channels[-2], channels[-1]
        self.branches = nn.ModuleList(nn.Conv2d(c_local, branch_channels, 3, padding=d, dilation=d) for d in dilations)
        self.local_proj = nn.Sequential(nn.Conv2d(branch_channels * len(dilations), dim, 1), nn.ReLU())
        self.attention = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(), nn.Conv2d(dim, 1, 1))
        self.global_proj = nn.Sequential(nn.Conv2d(c_global, dim, 1), nn.BatchNorm2d(dim), nn.SiLU())
        self.fc = nn.Linear(2 * dim, embedding_size)
        self.bn = nn.BatchNorm1d(embedding_size)
        self.act = nn.PReLU()
        self.embedding_size = int(embedding_size)

    def local_features(self, fmap: torch.Tensor) -> torch.Tensor:
        x = self.local_proj(torch.cat([b(fmap) for b in self.branches], dim=1))
        return F.normalize(x, dim=1) * F.softplus(self.attention(x))

    def forward(self, features) -> torch.Tensor:
        if not isinstance(features, (list, tuple)) or len(features) < 2:
            raise ValueError("neck 'dolg' needs the backbone's stage maps (backbone mode: stages)")
        local = self.local_features(features[-2])
        g = F.adaptive_avg_pool2d(self.global_proj(features[-1]), 1).flatten(1)
        fused = F.adaptive_avg_pool2d(orthogonal_fusion(local, g), 1).flatten(1)
        return self.act(self.bn(self.fc(fused)))


@hookimpl
def register_necks(register):
    register("dolg", DOLG)
