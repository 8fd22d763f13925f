"""Normalisers of the geometric combinations of the members, estimated from mixture samples.

Product of experts (PoE): log p(x) = sum_k w_k log p_k(x) - log Z. A weighted geometric mean never
exceeds the weighted arithmetic mean, so the importance weight of the PoE against the mixture,
r(x) = prod_k p_k(x)^w_k / sum_k w_k p_k(x), lies in [0, 1] and Z = E_mixture[r]. Bounded
weights give a one-sided confidence bound on Z (empirical Bernstein), hence a conservative NLL.

Logit averaging (what public MADE code reports): a product of Bernoullis with the members' mean
logit per dimension. Its importance weights are unbounded; only Markov's inequality bounds log Z,
from below, which turns its "NLL" into a lower bound on its true NLL.

Pure numpy; member log-likelihoods in nats. Sampling and evaluation are passed in as callables so
the same code runs on torch models, artifacts and enumerable toy models.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from service.contract.bernoulli import bernoulli_log_prob
from service.contract.mixture import product_log_weights

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
# Rows x members per onnxruntime call: its [B, K, H] hidden units and [B, K, D] logits stay near
# 100 MB at D = 784 whatever K is (10,000 rows of K = 128 in one call took 13 GB).
ROW_MEMBERS = 8_000


class SampledModel(Protocol):
    """What the product sampler needs of a loaded artifact (the service's Engine, or
    model.exported.ExportedMembers)."""

    weights: np.ndarray  # [K]

    def sample(self, num_samples: int, rng: np.random.Generator) -> np.ndarray: ...

    def member_log_probs(self, rows: np.ndarray) -> np.ndarray: ...


class EvaluatedModel(SampledModel, Protocol):
    """What the logit-average sampler needs besides: logits, and the mixture of member terms."""

    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def mixture(self, per_member: np.ndarray) -> np.ndarray: ...


def logit_average_log_prob(rows: np.ndarray, logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """rows [N, D] in {0,1}, logits [N, K, D] -> [N] log of the product of Bernoullis with the
    weighted mean logit per dimension (unnormalised), in nats."""
    weights = np.asarray(weights, dtype=np.float64)
    z = np.einsum("nkd,k->nd", logits.astype(np.float64), weights / weights.sum())
    return bernoulli_log_prob(rows, z).sum(axis=1)


@dataclass(frozen=True)
class NormaliserEstimate:
    """Z = E_q[r] estimated from n draws of q; log values in nats."""

    log_z: float  # log of the sample mean of r
    log_z_se: float  # standard error of log_z (delta method: se(mean) / mean)
    num_samples: int
    effective_sample_size: float  # (sum r)^2 / sum r^2
    max_weight_share: float  # largest r / sum r
    log_z_upper: float | None  # one-sided CONFIDENCE upper bound on log Z (r in [0, 1] only)
    log_z_lower: float | None  # one-sided CONFIDENCE lower bound on log Z (Markov; any r >= 0)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def bernstein_upper(mean: float, variance: float, n: int, delta: float) -> float:
    """Maurer-Pontil empirical Bernstein bound: E[r] <= this with probability >= 1 - delta, for n
    iid r in [0, 1] with sample mean ``mean`` and unbiased sample variance ``variance``."""
    log_term = math.log(2.0 / delta)
    return mean + math.sqrt(2.0 * variance * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))


def _summary(log_r: np.ndarray) -> tuple[float, float, float, float]:
    """(log mean, relative SE of the mean, ESS, largest share) of r, scaled by max r so that
    tiny weights do not underflow."""
    top = float(log_r.max())
    scaled = np.exp(log_r - top)
    total = float(scaled.sum())
    relative_se = math.sqrt(scaled.var(ddof=1) / len(scaled)) / (total / len(scaled))
    ess = total**2 / float(np.square(scaled).sum())
    return top + math.log(total / len(scaled)), relative_se, ess, 1.0 / total


def estimate_log_normaliser(
    draw_log_weights: Callable[[int], np.ndarray],
    bounded: bool,
    target_relative_se: float = 0.01,
    chunk: int = 10_000,
    max_samples: int = 1_000_000,
    min_samples: int = 2_000,
    confidence: float = CONFIDENCE,
) -> NormaliserEstimate:
    """Draw chunks of log r(x), x ~ q, until the relative SE of the mean is below the target or
    ``max_samples`` are used; return log Z with its error and bounds.

    bounded: r is known to lie in [0, 1] (the PoE), which allows the empirical-Bernstein upper
    bound. The bound is checked after every chunk with delta_j = delta / (j (j + 1)), which sums
    to delta, so it stays valid although the stopping time depends on the data.
    """
    started = time.perf_counter()
    delta = 1.0 - confidence
    chunks: list[np.ndarray] = []
    checks = 0
    upper = math.inf
    while True:
        chunks.append(np.asarray(draw_log_weights(chunk), dtype=np.float64))
        log_r = np.concatenate(chunks)
        n = len(log_r)
        if n < max(min_samples, 2):
            continue
        log_mean, rel_se, ess, max_share = _summary(log_r)
        checks += 1
        if bounded:
            r = np.exp(log_r)
            delta_j = delta / (checks * (checks + 1))
            upper = min(upper, bernstein_upper(float(r.mean()), float(r.var(ddof=1)), n, delta_j))
        log.info("n=%d log Z=%.4f relative SE=%.4f ESS=%.0f", n, log_mean, rel_se, ess)
        if rel_se < target_relative_se or n >= max_samples:
            break
    # Markov: P(mean >= Z / delta) <= delta, so log Z >= log mean + log delta with the confidence.
    return NormaliserEstimate(
        log_z=log_mean,
        log_z_se=rel_se,
        num_samples=n,
        effective_sample_size=ess,
        max_weight_share=max_share,
        log_z_upper=math.log(min(upper, 1.0)) if bounded else None,
        log_z_lower=log_mean + math.log(delta),
        seconds=time.perf_counter() - started,
    )


def rejection_sample_product(
    sample_mixture: Callable[[int], np.ndarray],
    member_log_probs: Callable[[np.ndarray], np.ndarray],
    weights: np.ndarray,
    num_samples: int,
    rng: np.random.Generator,
    chunk: int = 10_000,
) -> tuple[np.ndarray, float]:
    """Exact PoE samples: x from the mixture, kept with probability r(x) <= 1.

    Returns [num_samples, D] rows and the acceptance rate, an unbiased estimate of Z: the cost is
    1/Z mixture draws per sample, which is exp(-log Z), hopeless when log Z is far below zero.
    """
    kept: list[np.ndarray] = []
    count, drawn = 0, 0
    while count < num_samples:
        x = sample_mixture(chunk)
        log_r = product_log_weights(member_log_probs(x), weights)
        accepted = x[np.log(rng.random(len(x))) < log_r]
        kept.append(accepted)
        count += len(accepted)
        drawn += len(x)
    return np.concatenate(kept)[:num_samples], count / drawn


def product_sampler(engine: SampledModel, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """n -> [n] log r(x) of the PoE (the artifact's weights) for n exact mixture draws."""

    def draw(n: int) -> np.ndarray:
        x = engine.sample(n, rng)
        pieces = in_pieces(x, len(engine.weights))
        return np.concatenate(
            [product_log_weights(engine.member_log_probs(rows), engine.weights) for rows in pieces]
        )

    return draw


def in_pieces(rows: np.ndarray, num_members: int) -> list[np.ndarray]:
    """``rows`` split so that no onnxruntime call holds more than ROW_MEMBERS rows x members."""
    step = max(1, ROW_MEMBERS // num_members)
    return np.split(rows, range(step, len(rows), step))


def logit_average_sampler(
    engine: EvaluatedModel, rng: np.random.Generator
) -> Callable[[int], np.ndarray]:
    """n -> [n] log(f(x) / q(x)), f the uniform logit average and q the artifact's mixture."""
    uniform = np.ones(len(engine.weights))

    def draw(n: int) -> np.ndarray:
        x = engine.sample(n, rng)
        out = []
        for rows in in_pieces(x, len(engine.weights)):  # logits are [B, K, D]
            log_probs, logits = engine.forward(rows)
            out.append(logit_average_log_prob(rows, logits, uniform) - engine.mixture(log_probs))
        return np.concatenate(out)

    return draw
