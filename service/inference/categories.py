"""Estimated conditional probabilities of a row's missing categorical entries, from its
completions.

For a missing categorical dimension d, p(x_d = c | observed) is the average over the row's
completions x^(s) of p(x_d = c | x^(s) without d): each term is exact (the mixture's joint at
every class of d, normalised), so the average is unbiased for draws from p(missing | observed)
and tighter than the completions' class frequencies (Rao-Blackwell). With importance-resampled
completions it inherits their error, which their effective sample size states.
"""

import numpy as np

from service.contract.schema import Categorical
from service.inference.engine import Engine

CHUNK_ROWS = 8192  # complete rows scored at a time, to bound memory whatever C x completions


def missing_categories(engine: Engine, rows: np.ndarray, samples: np.ndarray) -> list[dict]:
    """Per input row of ``rows`` [B, D] (NaN = missing), {dimension: [C] probabilities} for each
    categorical dimension it lacks, estimated from its completions ``samples`` [B, n, D]."""
    schema = engine.schema
    wanted = [
        (b, d)
        for b in range(len(rows))
        for d, dimension in enumerate(schema.dimensions if schema else ())
        if isinstance(dimension, Categorical) and np.isnan(rows[b, d])
    ]
    answers: list[dict] = [{} for _ in range(len(rows))]
    if not wanted:
        return answers
    candidates = []
    for b, d in wanted:
        classes = int(schema.levels[d])
        each = np.repeat(samples[b][:, None, :], classes, axis=1)  # [n, C, D]
        each[:, :, d] = np.arange(classes)
        candidates.append(each.reshape(-1, engine.dim))
    flat = np.concatenate(candidates).astype(np.float32)
    log_joint = np.concatenate(
        [
            engine.log_likelihood(flat[i : i + CHUNK_ROWS]).log_likelihood
            for i in range(0, len(flat), CHUNK_ROWS)
        ]
    )
    start = 0
    for (b, d), each in zip(wanted, candidates, strict=True):
        n, classes = samples.shape[1], int(schema.levels[d])
        joint = log_joint[start : start + len(each)].reshape(n, classes)
        start += len(each)
        conditional = np.exp(joint - joint.max(axis=1, keepdims=True))
        conditional /= conditional.sum(axis=1, keepdims=True)
        answers[b][d] = conditional.mean(axis=0)
    return answers
