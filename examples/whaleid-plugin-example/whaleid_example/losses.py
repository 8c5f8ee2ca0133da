"""``normface``: cosine softmax without a margin (NormFace, Wang et al., ACM MM 2017): logits ``s * cos``."""

import torch
from torch import nn
from torch.nn import functional as F


class NormFace(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 16.0):
        super().__init__()
        self.s = float(s)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings, labels):
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        return F.cross_entropy(self.s * cos, labels)


def build_normface(embedding_size, num_classes, s=16.0):
    return NormFace(embedding_size, num_classes, s)
