"""Loss ``elastic_arcface`` (1st place): ElasticFace-Arc (Boutros et al., CVPRW 2022), ArcFace whose
margin is drawn per sample from N(m, sigma) at every training step (1st place: s=30, m=0.5,
sigma=0.0125, plain cross-entropy); in eval mode the margin is m. The head runs in float32.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.compat import autocast_off
from core.hookspecs import hookimpl
from plugins.losses.margins import arc_logits, cosine


class ElasticArcFace(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 30.0, m: float = 0.5, sigma: float = 0.0125,
                 easy_margin: bool = False, ls_eps: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m, self.sigma = float(s), float(m), float(sigma)
        self.easy_margin, self.ls_eps = easy_margin, float(ls_eps)

    def margins(self, batch: int, device) -> torch.Tensor:
        if not self.training or self.sigma == 0:
            return torch.full((batch,), self.m, device=device)
        return torch.normal(self.m, self.sigma, size=(batch,), device=device)

    def forward(self, embeddings, labels):
        with autocast_off(embeddings.device.type):
            cos = cosine(embeddings, self.weight)
            logits = arc_logits(cos, labels, self.margins(len(labels), cos.device), self.s, self.easy_margin)
            return F.cross_entropy(logits, labels, label_smoothing=self.ls_eps)


@hookimpl
def register_losses(register):
    register("elastic_arcface", ElasticArcFace)
