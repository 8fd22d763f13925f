"""MADE with a pool of K masks sharing one set of weights (Germain et al. 2015)."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.families import SchemaHead
from service.contract.masks import MaskPool
from service.contract.schema import Schema


class MaskedLinear(nn.Linear):
    """A linear layer holding one binary mask per pool member; ``member`` picks which one."""

    def __init__(self, in_features: int, out_features: int, masks: np.ndarray, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        # Derived from the pool's degrees, so not saved with the weights. Stored in the weights'
        # dtype, not as booleans: a boolean factor takes a mixed-dtype path in the product and
        # again in its gradient, which cost a 4,000 x 784 layer about twice the time per step.
        masks = torch.as_tensor(masks, dtype=self.weight.dtype)
        self.register_buffer("masks", masks, persistent=False)

    def forward(self, x: torch.Tensor, member: int) -> torch.Tensor:
        return F.linear(x, self.weight * self.masks[member], self.bias)


class MADE(nn.Module):
    """MADE: ``forward(x, k)`` gives member k's output units for rows x.

    Binary (no schema): the logits of p_k(x_d = 1 | x_<d), one per dimension. With a schema,
    x holds each dimension's level and the output holds each dimension's parameters
    (``service.contract.schema``).

    dim: D, the number of dimensions.
    hidden_sizes: widths of the ReLU hidden layers (any number, possibly none).
    pool: the K orderings and hidden degrees; masks are derived from them.
    direct: add masked direct input-to-output connections.
    schema: the dimensions' families; None for binary data.
    dropout: share of hidden units zeroed in training mode (a regulariser: the binarized MNIST
        pools overfit, docs/results.md section 5); masks still hold, since a dropped unit only
        removes paths.
    """

    def __init__(
        self,
        dim: int,
        hidden_sizes: list[int],
        pool: MaskPool,
        direct: bool = False,
        schema: Schema | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if pool.dim != dim or len(pool.hidden_degrees) != len(hidden_sizes):
            raise ValueError("mask pool does not match the network's dimension or depth")
        if schema is not None and schema.dim != dim:
            raise ValueError(f"the schema has {schema.dim} dimensions, the network {dim}")
        self.dim = dim
        self.hidden_sizes = list(hidden_sizes)
        self.pool = pool
        self.schema = schema
        self.dropout = dropout
        self.head = SchemaHead(schema) if schema is not None else None
        member_masks = [pool.layer_masks(k, schema) for k in range(pool.num_members)]
        inputs = schema.input_units if schema else dim
        outputs = schema.output_units if schema else dim
        sizes = [inputs, *hidden_sizes, outputs]
        self.layers = nn.ModuleList(
            MaskedLinear(sizes[i], sizes[i + 1], np.stack([m[i] for m in member_masks]))
            for i in range(len(sizes) - 1)
        )
        self.direct = (
            MaskedLinear(
                inputs,
                outputs,
                np.stack([pool.direct_mask(k, schema) for k in range(pool.num_members)]),
                bias=False,
            )
            if direct
            else None
        )

    @property
    def num_members(self) -> int:
        return self.pool.num_members

    def forward(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """x: [B, D] float (0/1, or levels with a schema) -> output units [B, U]."""
        inputs = x if self.head is None else self.head.encode(x)
        h = inputs
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h, member))
            if self.dropout and self.training:
                h = F.dropout(h, self.dropout)
        logits = self.layers[-1](h, member)
        if self.direct is not None:
            logits = logits + self.direct(inputs, member)
        return logits

    def log_prob_from(self, outputs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[B] log p(x) in nats of rows x under one member's output units [B, U] (the trainer
        computes those itself, through DistributedDataParallel's forward)."""
        if self.head is None:
            return log_prob_of(outputs, x)
        return self.head.log_terms(outputs, x).sum(dim=1)

    def log_prob(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """[B] log p_k(x) in nats."""
        return self.log_prob_from(self(x, member), x)

    def member_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K] log p_k(x) for every member."""
        return torch.stack([self.log_prob(x, k) for k in range(self.num_members)], dim=1)


def log_prob_of(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] log p(x) in nats of binary rows ``x`` under the Bernoulli ``logits`` [B, D]."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
