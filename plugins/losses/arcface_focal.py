"""Loss ``arcface_focal`` (the seed's): an ArcFace margin head, focal loss over label-smoothed CE.

ArcFace (Deng et al., 2019): logits ``s * cos(theta + m)`` for the true class, ``s * cos(theta)``
otherwise. Focal (Lin et al., 2017) over the smoothed cross-entropy ``ce``: ``(1 - exp(-ce))^gamma * ce``,
with ``reduction``:

- ``batch`` (the seed's): ``ce`` is the batch mean first, so the focal term is one factor on the
  whole batch's loss (3rd place, ``pl_hwd_train.py``: its ``FocalLoss`` wraps a
  ``LabelSmoothingCrossEntropy`` that already returns ``loss.mean()``; docs/winners.md);
- ``sample``: the term weighs each sample by its own ``ce``, then the mean (Lin et al.'s form).

``gamma: 0`` is plain label-smoothed cross-entropy under either reduction.
The head runs in float32 even under mixed precision: the margin's trigonometry underflows in fp16.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.compat import autocast_off
from core.hookspecs import hookimpl
from plugins.losses.margins import arc_logits, cosine


class ArcMarginProduct(nn.Module):
    """Cosine logits with an additive angular margin (``margins.arc_logits``, shared by the ArcFace losses);
    [B, E] embeddings -> [B, num_classes] logits."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 20.0, m: float = 0.30, easy_margin=False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m, self.easy_margin = s, m, easy_margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return arc_logits(cosine(embeddings, self.weight), labels, self.m, self.s, self.easy_margin)


class ArcFaceFocalLoss(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 20.0, m: float = 0.30,
                 easy_margin: bool = False, ls_eps: float = 0.2, gamma: float = 6.0, reduction: str = "batch"):
        super().__init__()
        if reduction not in ("batch", "sample"):
            raise ValueError(f"loss 'arcface_focal' reduction must be 'batch' or 'sample', got {reduction!r}")
        self.head = ArcMarginProduct(embedding_size, num_classes, s, m, easy_margin)
        self.ls_eps, self.gamma, self.reduction = ls_eps, gamma, reduction

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device_type = embeddings.device.type
        with autocast_off(device_type):
            logits = self.head(embeddings.float(), labels)
            ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.ls_eps)
            if self.reduction == "batch":
                ce = ce.mean()
            return focal_term(ce, self.gamma).mean()


def focal_term(ce: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(1 - exp(-ce))^gamma * ce``, elementwise."""
    return (1.0 - torch.exp(-ce)).pow(gamma) * ce


@hookimpl
def register_losses(register):
    register("arcface_focal", ArcFaceFocalLoss)
