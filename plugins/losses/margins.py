"""Shared margin arithmetic for the ArcFace family (not a plugin: the loss modules use it).

``arc_logits`` applies an additive angular margin, per sample, to the true class only:
``s * cos(theta_y + m_i)`` for the true class y and ``s * cos(theta_j)`` otherwise, with ArcFace's
fallback ``cos(theta) - sin(pi - m) * m`` past ``theta > pi - m`` (Deng et al., 2019).
``adaptive_margins`` gives per-class margins from class counts, as the 2nd and 4th places did
(docs/winners.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def cosine(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(F.normalize(embeddings.float()), F.normalize(weight.float())).clamp(-1.0, 1.0)


def arc_logits(cos: torch.Tensor, labels: torch.Tensor, m, s: float, easy_margin: bool = False) -> torch.Tensor:
    """[B, C] cosines -> [B, C] logits; ``m`` is a float or a [B] tensor of per-sample margins."""
    m = torch.as_tensor(m, dtype=cos.dtype, device=cos.device).expand(cos.shape[0])
    target = cos.gather(1, labels[:, None]).squeeze(1)
    sine = torch.sqrt((1.0 - target.pow(2)).clamp(min=1e-12))
    phi = target * torch.cos(m) - sine * torch.sin(m)
    if easy_margin:
        phi = torch.where(target > 0, phi, target)
    else:
        phi = torch.where(target > torch.cos(math.pi - m), phi, target - torch.sin(math.pi - m) * m)
    return s * cos.scatter(1, labels[:, None], phi[:, None])


def adaptive_margins(class_counts, kind: str) -> np.ndarray:
    """Per-class margins from training images per class.

    ``2nd``: m_c = 0.5 * n_c^-0.125 + 0.05 (about 0.55 for a singleton, 0.33 at 106 images);
    ``4th``: 0.05 + 0.3 * the min-max scaled n_c^-0.25, so margins run from 0.05 (commonest) to 0.35 (rarest).
    """
    n = np.asarray(class_counts, dtype=np.float64)
    if n.ndim != 1 or len(n) == 0 or (n < 1).any():
        raise ValueError(f"class_counts must be positive counts, one per class; got {class_counts!r}")
    if kind == "2nd":
        return 0.5 * n ** -0.125 + 0.05
    if kind == "4th":
        x = n ** -0.25
        span = x.max() - x.min()
        return 0.05 + 0.3 * ((x - x.min()) / span if span > 0 else np.zeros_like(x))
    raise ValueError(f"adaptive_margin must be '2nd' or '4th' (or null), got {kind!r}")


def class_margins(m: float, adaptive: str | None, class_counts, num_classes: int) -> torch.Tensor | None:
    """A [num_classes] margin buffer for ``adaptive`` margins, or None for the fixed ``m``."""
    if not adaptive:
        return None
    if class_counts is None or len(class_counts) != num_classes:
        raise ValueError(f"an adaptive margin needs class_counts for all {num_classes} classes "
                         "(the runner passes them to loss factories that name the parameter)")
    return torch.tensor(adaptive_margins(class_counts, adaptive), dtype=torch.float32)
