"""The Bernoulli log-likelihood of binary data under logits, shared by trainer and service."""

import numpy as np


def bernoulli_log_prob(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log Bernoulli(x; sigmoid(z)) = x z - log(1 + e^z), elementwise in float64 nats.

    x in {0, 1} (any float dtype) broadcast against logits z; one formula everywhere, so the
    engine, the sampler's importance weights and the float64 parity reference round alike.
    """
    z = np.asarray(logits, dtype=np.float64)
    return x * z - np.logaddexp(0.0, z)
