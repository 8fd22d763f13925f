"""MADE with a pool of K masks sharing one set of weights (Germain et al. 2015)."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from service.contract.masks import MaskPool


class MaskedLinear(nn.Linear):
    """A linear layer holding one binary mask per pool member; ``member`` picks which one."""

    def __init__(self, in_features: int, out_features: int, masks: np.ndarray, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        # Derived from the pool's degrees, so not saved with the weights.
        self.register_buffer("masks", torch.as_tensor(masks, dtype=torch.bool), persistent=False)

    def forward(self, x: torch.Tensor, member: int) -> torch.Tensor:
        return F.linear(x, self.weight * self.masks[member], self.bias)


class MADE(nn.Module):
    """Bernoulli MADE: ``forward(x, k)`` gives the logits of p_k(x_d = 1 | x_<d) under member k.

    dim: D, the number of binary inputs.
    hidden_sizes: widths of the ReLU hidden layers (any number, possibly none).
    pool: the K orderings and hidden degrees; masks are derived from them.
    direct: add masked direct input-to-output connections.
    """

    def __init__(self, dim: int, hidden_sizes: list[int], pool: MaskPool, direct: bool = False):
        super().__init__()
        if pool.dim != dim or len(pool.hidden_degrees) != len(hidden_sizes):
            raise ValueError("mask pool does not match the network's dimension or depth")
        self.dim = dim
        self.hidden_sizes = list(hidden_sizes)
        self.pool = pool
        member_masks = [pool.layer_masks(k) for k in range(pool.num_members)]
        sizes = [dim, *hidden_sizes, dim]
        self.layers = nn.ModuleList(
            MaskedLinear(sizes[i], sizes[i + 1], np.stack([m[i] for m in member_masks]))
            for i in range(len(sizes) - 1)
        )
        self.direct = (
            MaskedLinear(
                dim,
                dim,
                np.stack([pool.direct_mask(k) for k in range(pool.num_members)]),
                bias=False,
            )
            if direct
            else None
        )

    @property
    def num_members(self) -> int:
        return self.pool.num_members

    def forward(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """x: [B, D] float in {0,1} -> logits [B, D]."""
        h = x
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h, member))
        logits = self.layers[-1](h, member)
        if self.direct is not None:
            logits = logits + self.direct(x, member)
        return logits

    def log_prob(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """[B] log p_k(x) in nats."""
        return log_prob_of(self(x, member), x)

    def member_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K] log p_k(x) for every member."""
        return torch.stack([self.log_prob(x, k) for k in range(self.num_members)], dim=1)


def log_prob_of(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] log p(x) in nats of rows ``x`` under the Bernoulli ``logits`` [B, D] of one member
    (the trainer computes the logits itself, through DistributedDataParallel's forward)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
