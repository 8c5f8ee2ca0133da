"""Pair explanations: where two photos' embeddings agree (drawn by ``tools.explain`` and the review page).

For a (query, database) pair, a heatmap on each photo: the gradient of the two embeddings' cosine
similarity with respect to that photo's last feature map, Grad-CAM style (Selvaraju et al., ICCV 2017):
channel weights are the spatially averaged gradients, the map is ReLU(sum_c weight_c * A_c), upsampled
to the photo. Both directions at once: each photo's map says which of its regions raise the similarity to
the other. A backbone whose output is not a feature map (``mode: pooled``) can supply its own explanation by
defining ``explain_pair(image_a, image_b, neck) -> (heat_a, heat_b)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


class ExplainError(ValueError):
    pass


def _last_map(features):
    return features[-1] if isinstance(features, (list, tuple)) else features


def pair_heatmaps(model, image_a: torch.Tensor, image_b: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """(heat_a [h, w], heat_b [h, w] in [0, 1] at the images' size, cosine) for two [3, h, w] images."""
    model.eval()
    backbone, neck = model.backbone, model.neck
    if hasattr(backbone, "explain_pair"):
        heat_a, heat_b = backbone.explain_pair(image_a, image_b, neck)
        with torch.no_grad():
            e = F.normalize(model(torch.stack([image_a, image_b])), dim=1)
        return np.asarray(heat_a), np.asarray(heat_b), float(e[0] @ e[1])
    batch = torch.stack([image_a, image_b]).requires_grad_(False)
    features = backbone(batch)
    fmap = _last_map(features)
    if not isinstance(fmap, torch.Tensor) or fmap.ndim != 4:
        raise ExplainError("the backbone returns no feature map (e.g. timm mode: pooled); use mode: map or stages, "
                           "or give the backbone an explain_pair(image_a, image_b, neck) method")
    fmap.retain_grad()
    emb = F.normalize(neck(features).float(), dim=1)
    cosine = (emb[0] * emb[1]).sum()
    cosine.backward()
    grads = fmap.grad  # [2, C, h', w']
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * fmap).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=image_a.shape[1:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam.detach().numpy()
    heats = [c / c.max() if c.max() > 0 else c for c in cam]
    return heats[0], heats[1], float(cosine.detach())


def load_image(path: str, cfg) -> tuple[torch.Tensor, np.ndarray]:
    """(normalised tensor as the model sees it, the RGB photo at the model's size for drawing)."""
    from core.images import IMAGENET_MEAN, IMAGENET_STD, load_rgb, portrait, squash_to_tensor

    img = load_rgb(path)
    if cfg.data.get("rotate_landscape", False):
        img = portrait(img)
    size = (int(cfg.data.image_size[0]), int(cfg.data.image_size[1]))
    mean, std = tuple(cfg.dataset.get("mean", IMAGENET_MEAN)), tuple(cfg.dataset.get("std", IMAGENET_STD))
    photo = np.asarray(img.resize((size[1], size[0])))
    return squash_to_tensor(img, size, mean, std), photo


def overlay(photo: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo (uint8 [h, w, 3]) under the heatmap ([h, w] in [0, 1]) coloured blue (cold) to red (hot)."""
    h = np.clip(heat, 0, 1)[..., None]
    colour = np.concatenate([np.clip(2 * h, 0, 1), np.clip(2 - np.abs(4 * h - 2), 0, 1), np.clip(2 - 2 * h, 0, 1)],
                            axis=-1) * 255
    return ((1 - alpha) * photo.astype(np.float64) + alpha * colour).astype(np.uint8)
