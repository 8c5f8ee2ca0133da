"""Loss ``elastic_arcface`` (1st place): ElasticFace-Arc (Boutros et al., CVPRW 2022), ArcFace whose
margin is drawn per sample from N(m, sigma) at every training step (1st place: s=30, m=0.5,
sigma=0.0125, plain cross-entropy); in eval mode the margin is m. The head runs in float32.
"""

from __future__ import annotations

import torch

from core.hookspecs import hookimpl
from plugins.losses.arcface import ArcFaceLoss


class ElasticArcFace(ArcFaceLoss):
    """ArcFace whose margin is drawn per sample from N(m, sigma) in training (``m`` at evaluation)."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 30.0, m: float = 0.5, sigma: float = 0.0125,
                 easy_margin: bool = False, ls_eps: float = 0.0):
        super().__init__(embedding_size, num_classes, s=s, m=m, easy_margin=easy_margin, ls_eps=ls_eps)
        self.sigma = float(sigma)

    def margins(self, batch: int, device) -> torch.Tensor:
        if not self.training or self.sigma == 0:
            return torch.full((batch,), self.m, device=device)
        return torch.normal(self.m, self.sigma, size=(batch,), device=device)


@hookimpl
def register_losses(register):
    register("elastic_arcface", ElasticArcFace)
