"""Pooling layers shared by the necks: GeM (generalised mean pooling; Radenovic, Tolias and Chum, TPAMI 2018).
No hook: a helper module that neck plugins import (``submission.build`` bundles it with them)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GeM(nn.Module):
    """Generalised mean pooling: ``(mean x^p)^(1/p)`` over h, w; [B, C, h, w] -> [B, C]."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(p), 1).pow(1.0 / p).flatten(1)
