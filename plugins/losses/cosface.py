"""Loss ``cosface``: large-margin cosine loss (Wang et al., CVPR 2018), logits ``s * (cos - m)`` on the
true class, cross-entropy; for ablations. The head runs in float32."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.compat import autocast_off
from core.hookspecs import hookimpl
from plugins.losses.margins import cosine


class CosFaceLoss(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 30.0, m: float = 0.35, ls_eps: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m, self.ls_eps = float(s), float(m), float(ls_eps)

    def forward(self, embeddings, labels):
        with autocast_off(embeddings.device.type):
            cos = cosine(embeddings, self.weight)
            logits = self.s * (cos - self.m * F.one_hot(labels, cos.shape[1]).to(cos.dtype))
            return F.cross_entropy(logits, labels, label_smoothing=self.ls_eps)


@hookimpl
def register_losses(register):
    register("cosface", CosFaceLoss)
