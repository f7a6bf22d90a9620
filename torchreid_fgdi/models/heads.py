"""CLIP-FGDI's heads: BNNecks, identity classifiers, domain classifiers and gradient reversal."""

from __future__ import annotations

import torch
from torch import nn


def bnneck(dim: int) -> nn.BatchNorm1d:
    """BatchNorm1d with a frozen zero bias (the BNNeck of strong re-ID baselines)."""
    bn = nn.BatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


def id_classifier(dim: int, num_classes: int) -> nn.Linear:
    layer = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(layer.weight, std=0.001)
    return layer


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


class GradientReversal(nn.Module):
    """Identity forward; backward multiplies the gradient by ``-scale`` (the paper's epsilon).

    Behind it, a domain classifier that learns to read the domain pushes the prompts to hide it.
    """

    def __init__(self, scale: float = 0.1):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGrad.apply(x, self.scale)


class DomainClassifier(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear over text features; returns domain logits.

    The authors return log-softmax and then apply cross-entropy, which equals cross-entropy on
    these logits (log-softmax is idempotent). Parameter names match their checkpoints.
    """

    def __init__(self, dim: int, num_domains: int, hidden: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, num_domains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))
