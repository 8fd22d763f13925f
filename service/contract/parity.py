"""Float32 log-likelihoods against a float64 evaluation of the same weights, with one tolerance.

Export checks torch and onnxruntime against the trained weights; ``Engine.load`` checks
onnxruntime and the sampler against the weights the graph holds. Both use ``worst_gap``.

The tolerance is relative: a float32 sum of L nats is resolved only to about L * 2^-24, and under
a sharp model random rows score tens of thousands of nats (an absolute 1e-3 nats is below float32
resolution past 16,384). ``|float32 - float64| <= ATOL + RTOL * |L|`` per row and member, with
u = 2^-24: the graph's reduction is within (c + D/c + 5) u |L| + 4 D u of its own logits' exact
log-likelihood (``model.onnx_graph``; 4.5e-6 |L| + 1.9e-4 nats at D = 784) and the logits carry
float32 rounding of their H + D products. Measured in all: at most 2.6e-7 |L| for onnxruntime
and torch on a binarized-MNIST model (784-1000-784 with direct connections, K = 8, 2 epochs).
RTOL = 1e-5, about 170 u, covers both with a margin; ATOL covers rows scoring near 0.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.contract.bernoulli import bernoulli_log_prob
from service.contract.sampler import MemberNet
from service.contract.schema import Schema

ATOL = 1e-3  # nats
RTOL = 1e-5  # of |log p_k(x)|


def reference_log_probs(
    nets: Sequence[MemberNet], rows: np.ndarray, schema: Schema | None = None
) -> np.ndarray:
    """rows [B, D] (0/1, or levels of the schema) -> [B, K] log p_k(x) in nats, every member's
    forward in float64."""
    x = rows.astype(np.float64) if schema is None else schema.encode(rows)
    out = np.empty((len(rows), len(nets)))
    for k, net in enumerate(nets):  # one member at a time: float64 copies of its weights only
        h = x
        for weight, bias in net.hidden:
            h = np.maximum(h @ weight.T.astype(np.float64) + bias, 0.0)
        logits = h @ net.out_weight.T.astype(np.float64) + net.out_bias
        if net.direct is not None:
            logits += x @ net.direct.T.astype(np.float64)
        if schema is None:
            out[:, k] = bernoulli_log_prob(x, logits).sum(axis=1)
        else:
            out[:, k] = schema.log_terms(logits, rows).sum(axis=1)
    return out


def random_rows(
    schema: Schema | None, count: int, dim: int, rng: np.random.Generator
) -> np.ndarray:
    """[count, D] float32 random rows: 0/1 of every density for a binary model (random rows score
    far below real ones under a sharp model), uniform levels under a schema."""
    if schema is not None:
        return schema.random_rows(count, rng)
    density = rng.random((count, 1))
    return (rng.random((count, dim)) < density).astype(np.float32)


@dataclass(frozen=True)
class Gap:
    """|float32 - float64| in nats at the entry that uses the largest share of its tolerance."""

    nats: float
    allowed: float

    @property
    def within(self) -> bool:
        return self.nats <= self.allowed

    def __str__(self) -> str:
        return f"{self.nats:.3g} nats (allowed {self.allowed:.3g})"


def worst_gap(values: np.ndarray, reference: np.ndarray) -> Gap:
    """values and reference [B, K] in nats; a non-finite value is an infinite gap."""
    gap = np.abs(np.asarray(values, dtype=np.float64) - reference)
    gap[~np.isfinite(gap)] = np.inf
    allowed = ATOL + RTOL * np.abs(np.nan_to_num(reference))
    worst = np.unravel_index(np.argmax(gap / allowed), gap.shape)
    return Gap(float(gap[worst]), float(allowed[worst]))
