"""Loss ``arcface``: ArcFace (Deng et al., 2019) over plain (optionally label-smoothed) cross-entropy,
no focal term; for ablations against the seed's ``arcface_focal``. The head runs in float32."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.compat import autocast_off
from core.hookspecs import hookimpl
from plugins.losses.margins import arc_logits, cosine


class ArcFaceLoss(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 20.0, m: float = 0.30,
                 easy_margin: bool = False, ls_eps: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m, self.easy_margin, self.ls_eps = float(s), float(m), easy_margin, float(ls_eps)

    def margins(self, batch: int, device):
        """The additive angular margin of each sample: one ``m`` here; subclasses may vary it per sample."""
        return self.m

    def forward(self, embeddings, labels):
        with autocast_off(embeddings.device.type):
            cos = cosine(embeddings, self.weight)
            logits = arc_logits(cos, labels, self.margins(len(labels), cos.device), self.s, self.easy_margin)
            return F.cross_entropy(logits, labels, label_smoothing=self.ls_eps)


@hookimpl
def register_losses(register):
    register("arcface", ArcFaceLoss)
