"""Exact ancestral sampling of one MADE member in numpy, with optional clamped (observed) entries.

The first layer is updated incrementally: setting x_d adds x_d times one column of the masked
weight matrix to the hidden pre-activations, so a step costs O(n H) instead of a full pass.
Clamped entries are kept and their conditionals multiplied into an importance weight, which makes
the same routine the proposal of the importance-sampling estimators.
"""

from dataclasses import dataclass

import numpy as np

from service.masks import MaskPool


@dataclass(frozen=True)
class MemberNet:
    """One member's masked weights, float32. Without hidden layers ``out_weight`` reads x."""

    ordering: np.ndarray  # [D]
    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight [out, in], bias [out]) per layer
    out_weight: np.ndarray  # [D, H_last] (or [D, D] without hidden layers)
    out_bias: np.ndarray  # [D]
    direct: np.ndarray | None  # [D, D]


def member_nets(
    pool: MaskPool,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    direct_weight: np.ndarray | None,
) -> list[MemberNet]:
    """Apply each member's masks (derived from its degrees) to the shared weights."""
    nets = []
    for k in range(pool.num_members):
        masks = pool.layer_masks(k)
        masked = [(w * m).astype(np.float32) for w, m in zip(weights, masks, strict=True)]
        nets.append(
            MemberNet(
                ordering=pool.orderings[k],
                hidden=tuple(
                    (w, b.astype(np.float32)) for w, b in zip(masked[:-1], biases[:-1], strict=True)
                ),
                out_weight=masked[-1],
                out_bias=biases[-1].astype(np.float32),
                direct=(direct_weight * pool.direct_mask(k)).astype(np.float32)
                if direct_weight is not None
                else None,
            )
        )
    return nets


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def ancestral(
    net: MemberNet, given: np.ndarray, uniforms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sample missing entries in the member's ordering, keeping the given ones.

    given: [n, D] float32, NaN where missing. uniforms: [n, D] in [0, 1), column t used at
    position t of the ordering. Returns x [n, D] float32 in {0, 1} and the log importance weight
    [n] float64: the sum of log p(x_d | x_<d) over the given entries (0 when none are given).
    """
    n, dim = given.shape
    x = np.zeros((n, dim), dtype=np.float32)
    log_weight = np.zeros(n, dtype=np.float64)
    observed = ~np.isnan(given)
    if net.hidden:
        first_weight, first_bias = net.hidden[0]
        pre = np.broadcast_to(first_bias, (n, first_bias.shape[0])).copy()
        hidden = np.empty_like(pre)
    for t, d in enumerate(net.ordering):
        if net.hidden:
            np.maximum(pre, 0.0, out=hidden)
            h = hidden
            for weight, bias in net.hidden[1:]:
                h = np.maximum(h @ weight.T + bias, 0.0)
            logit = h @ net.out_weight[d] + net.out_bias[d]
        else:
            logit = x @ net.out_weight[d] + net.out_bias[d]
        if net.direct is not None:
            logit = logit + x @ net.direct[d]
        logit = logit.astype(np.float64)
        sampled = uniforms[:, t] < 1.0 / (1.0 + np.exp(-logit))
        value = np.where(observed[:, d], given[:, d], sampled).astype(np.float32)
        if observed[:, d].any():
            log_p = np.where(value > 0, _log_sigmoid(logit), _log_sigmoid(-logit))
            log_weight += np.where(observed[:, d], log_p, 0.0)
        x[:, d] = value
        if net.hidden:
            pre += value[:, None] * first_weight[:, d]
    return x, log_weight
