"""Loss ``subcenter_arcface`` (2nd place): sub-center ArcFace (Deng et al., ECCV 2020), ``k`` centres per
class and the max cosine over them, with an optional adaptive per-class margin.

2nd place: k=2, s=21, ``adaptive_margin: 2nd`` (m_c = 0.5 * n_c^-0.125 + 0.05); 4th place's margin is
``adaptive_margin: 4th`` (min-max scaled n_c^-1/4 into [0.05, 0.35]) on a single centre (k=1).
The class counts come from the runner (``class_counts``). The head runs in float32.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.compat import autocast_off
from core.hookspecs import hookimpl
from plugins.losses.margins import arc_logits, class_margins, cosine


class SubCenterArcFace(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, k: int = 2, s: float = 21.0, m: float = 0.30,
                 adaptive_margin: str | None = None, class_counts=None, easy_margin: bool = False, ls_eps: float = 0.0):
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"loss 'subcenter_arcface' k must be at least 1, got {k}")
        self.k, self.num_classes = int(k), int(num_classes)
        self.weight = nn.Parameter(torch.empty(self.num_classes * self.k, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m, self.easy_margin, self.ls_eps = float(s), float(m), easy_margin, float(ls_eps)
        margins = class_margins(self.m, adaptive_margin, class_counts, self.num_classes)
        self.register_buffer("margins", margins if margins is not None else torch.empty(0), persistent=False)

    def class_cosine(self, embeddings):
        """[B, num_classes]: for each class the best of its k sub-centres."""
        cos = cosine(embeddings, self.weight).view(-1, self.num_classes, self.k)
        return cos.amax(dim=2)

    def forward(self, embeddings, labels):
        with autocast_off(embeddings.device.type):
            cos = self.class_cosine(embeddings)
            m = self.margins[labels] if self.margins.numel() else self.m
            return F.cross_entropy(arc_logits(cos, labels, m, self.s, self.easy_margin), labels,
                                   label_smoothing=self.ls_eps)


@hookimpl
def register_losses(register):
    register("subcenter_arcface", SubCenterArcFace)
