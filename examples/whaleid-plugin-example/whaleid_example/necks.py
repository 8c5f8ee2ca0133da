"""``mean_max``: average and max pooling of the backbone's last feature map, concatenated, then Linear + BN."""

import torch
from torch import nn


class MeanMaxNeck(nn.Module):
    def __init__(self, in_features: int, embedding_size: int = 128, dropout: float = 0.0):
        super().__init__()
        self.embedding_size = int(embedding_size)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * in_features, self.embedding_size)
        self.bn = nn.BatchNorm1d(self.embedding_size)

    def forward(self, x):
        if isinstance(x, (list, tuple)):  # stages: the last one
            x = x[-1]
        if x.dim() == 4:
            pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        else:  # an already pooled [B, C] vector: its mean and max are itself
            pooled = torch.cat([x, x], dim=1)
        return self.bn(self.fc(self.drop(pooled)))


def build_mean_max(in_features, embedding_size=128, dropout=0.0):
    return MeanMaxNeck(in_features, embedding_size, dropout)
