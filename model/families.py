"""The schema's log-likelihoods in torch, for the training loss: the same formulas as the numpy
reference (``service.contract.schema``), which the tests hold them to."""

import torch
import torch.nn.functional as F
from torch import nn

from service.contract.schema import (
    GAUSSIAN_MIN_LOG_SCALE,
    HALF_LOG_TWO_PI,
    MAX_LOG_SCALE,
    MIN_LOG_SCALE,
    Schema,
)


class SchemaHead(nn.Module):
    """Encodes rows of levels for the network and scores the network's output units."""

    def __init__(self, schema: Schema):
        super().__init__()
        self.schema = schema
        # Index arrays only, derived from the schema: not saved with the weights.
        buffers = {
            "input_unit_dims": schema.input_unit_dims,
            "unit_classes": schema.unit_classes,
            "unit_scales": schema.unit_scales,
            "unit_shifts": schema.unit_shifts,
        }
        for name, value in buffers.items():
            self.register_buffer(name, torch.as_tensor(value), persistent=False)
        self.groups = [
            (group.family, torch.as_tensor(group.dims), torch.as_tensor(group.units))
            for group in schema.groups
        ]
        for i, group in enumerate(schema.groups):
            self.register_buffer(f"levels_{i}", torch.as_tensor(group.levels), persistent=False)
            self.register_buffer(f"means_{i}", torch.as_tensor(group.means), persistent=False)
            self.register_buffer(f"scales_{i}", torch.as_tensor(group.scales), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] levels -> [B, I]: 0/1 as is, one-hot categoricals, ordinals scaled to [-1, 1]."""
        values = x[:, self.input_unit_dims]
        scaled = values * self.unit_scales.to(x.dtype) + self.unit_shifts.to(x.dtype)
        one_hot = (values == self.unit_classes.to(x.dtype)).to(x.dtype)
        return torch.where(self.unit_classes >= 0, one_hot, scaled)

    def log_terms(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[B, D] log p(x_d | x_<d) from output units [B, U] and levels [B, D]."""
        out = torch.zeros_like(x)
        for i, (family, dims, units) in enumerate(self.groups):
            p = params[:, units.to(params.device)]  # [B, n, width]
            values = x[:, dims.to(x.device)]
            if family == "bernoulli":
                terms = -F.binary_cross_entropy_with_logits(p[..., 0], values, reduction="none")
            elif family == "categorical":
                log_p = torch.log_softmax(p, dim=-1)
                terms = log_p.gather(-1, values.long().unsqueeze(-1)).squeeze(-1)
            elif family == "gaussian_mixture":
                means = getattr(self, f"means_{i}").to(x.dtype)
                scales = getattr(self, f"scales_{i}").to(x.dtype)
                terms = gaussian_mixture_log_density(values, p, means, scales)
            else:
                levels = getattr(self, f"levels_{i}").to(x.dtype)
                terms = discretized_logistic_log_prob(values, p, levels)
            out[:, dims.to(x.device)] = terms
        return out


def discretized_logistic_log_prob(
    x: torch.Tensor, params: torch.Tensor, levels: torch.Tensor
) -> torch.Tensor:
    """log p(x) [B, n] of levels x [B, n] under params [B, n, 3M] (M logits, M means, M raw
    log-scales), levels [n]: ``service.contract.schema.discretized_logistic_log_prob``."""
    m = params.shape[-1] // 3
    logits, means, raw = params[..., :m], params[..., m : 2 * m], params[..., 2 * m :]
    half = (1.0 / (levels - 1.0)).unsqueeze(-1)  # [n, 1]
    centre = 2.0 * x.unsqueeze(-1) * half - 1.0
    inv_scale = torch.exp(-raw.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))
    upper = (centre + half - means) * inv_scale
    lower = (centre - half - means) * inv_scale
    delta = 2.0 * half * inv_scale
    first = -F.softplus(-upper)
    last = -F.softplus(lower)
    inner = -F.softplus(-lower) - F.softplus(upper) + delta + torch.log(-torch.expm1(-delta))
    xs = x.unsqueeze(-1)
    top = (levels - 1.0).unsqueeze(-1)
    component = torch.where(xs <= 0, first, torch.where(xs >= top, last, inner))
    return torch.logsumexp(component + torch.log_softmax(logits, dim=-1), dim=-1)


def gaussian_mixture_log_density(
    x: torch.Tensor, params: torch.Tensor, column_means: torch.Tensor, column_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) [B, n] of real values x [B, n] in the data's units under params [B, n, 3M] (M
    logits, M means, M raw log-scales of the standardized value), each column's mean and scale
    [n]: ``service.contract.schema.gaussian_mixture_log_density``."""
    m = params.shape[-1] // 3
    logits, means, raw = params[..., :m], params[..., m : 2 * m], params[..., 2 * m :]
    z = ((x - column_means) / column_scales).unsqueeze(-1)
    log_scale = raw.clamp(GAUSSIAN_MIN_LOG_SCALE, MAX_LOG_SCALE)
    standard = (z - means) * torch.exp(-log_scale)
    component = -0.5 * standard**2 - log_scale - HALF_LOG_TWO_PI
    log_z = torch.logsumexp(component + torch.log_softmax(logits, dim=-1), dim=-1)
    return log_z - torch.log(column_scales)
