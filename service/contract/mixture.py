"""The ensemble as a mixture: log p(x) = logsumexp_k(log w_k + log p_k(x)), and its EM weights.

Pure numpy on [N, K] matrices of member log-likelihoods (nats), used by trainer and service alike.
"""

from typing import Literal

import numpy as np

# How a likelihood of observed entries was found: exactly, or by importance sampling over members.
Method = Literal["exact", "importance"]
# How members make one density: their mixture, or their normalised (geometric) product.
Combination = Literal["mixture", "product"]


def log_weights(weights: np.ndarray) -> np.ndarray:
    """log w_k, with -inf for pruned members and no warning for them."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(weights, dtype=np.float64))


def mixture_log_prob(member_log_probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[N, K] log p_k(x) and [K] weights -> [N] log p(x) of the mixture, in nats."""
    joint = np.asarray(member_log_probs, dtype=np.float64) + log_weights(weights)
    top = joint.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True)))[:, 0]


def responsibilities(member_log_probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[N, K] posterior p(k | x) of each member for each row."""
    joint = np.asarray(member_log_probs, dtype=np.float64) + log_weights(weights)
    return np.exp(joint - mixture_log_prob(member_log_probs, weights)[:, None])


def fit_em_weights(
    member_log_probs: np.ndarray,
    alpha: float = 1.0,
    max_iterations: int = 500,
    tolerance: float = 1e-9,
) -> np.ndarray:
    """MAP-EM for the mixture weights under a symmetric Dirichlet(alpha) prior.

    M-step: w_k proportional to max(0, N_k + alpha - 1), N_k the summed responsibilities;
    alpha = 1 is maximum likelihood, alpha < 1 pushes weights to exactly zero (sparsity).
    """
    k = member_log_probs.shape[1]
    weights = np.full(k, 1.0 / k)
    previous = -np.inf
    for _ in range(max_iterations):
        counts = responsibilities(member_log_probs, weights).sum(axis=0)
        unnormalised = np.maximum(0.0, counts + alpha - 1.0)
        if unnormalised.sum() <= 0:  # the prior removed everything: keep the best member
            unnormalised = (counts == counts.max()).astype(np.float64)
        weights = unnormalised / unnormalised.sum()
        objective = mixture_log_prob(member_log_probs, weights).mean()
        if objective - previous < tolerance:
            break
        previous = objective
    return weights


# The product of experts: log p(x) = sum_k w_k log p_k(x) - log Z (Z estimated offline).
def product_log_unnormalised(member_log_probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[N, K] log p_k(x) -> [N] sum_k w_k log p_k(x); members of weight 0 do not count."""
    weights = np.asarray(weights, dtype=np.float64)
    active = weights > 0
    return member_log_probs[:, active] @ weights[active]


def product_log_weights(member_log_probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[N] log r(x) = log(geometric / arithmetic mean of the p_k), <= 0 up to rounding."""
    geometric = product_log_unnormalised(member_log_probs, weights)
    return np.minimum(geometric - mixture_log_prob(member_log_probs, weights), 0.0)
