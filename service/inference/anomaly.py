"""Anomaly answers on top of log-likelihoods: conformal p-values against the artifact's held-out
calibration rows, and which dimensions made a row surprising.

A raw log-likelihood in nats does not say where to cut; a p-value does: flagging rows with
p <= alpha flags at most a fraction alpha of normal rows (``service.contract.conformal``).
"""

from dataclasses import dataclass

import numpy as np

from service.contract import conformal
from service.contract.artifact import Score
from service.contract.mixture import responsibilities


@dataclass(frozen=True)
class Anomaly:
    score: Score
    anomaly_score: np.ndarray  # [B] higher = more unusual: -log p(x), or S(x) = -log p(x) - L(x)
    p_value: np.ndarray  # [B] conformal, in (0, 1]
    alpha: float | None
    anomalous: np.ndarray | None  # [B] p <= alpha, when alpha is set


@dataclass(frozen=True)
class Surprise:
    index: int  # the dimension
    value: float  # the row's value there
    surprise: float  # -log p_k(x_d | x_<d), nats, under the row's most probable member


def anomaly_of(
    log_likelihood: np.ndarray,
    rows: np.ndarray,
    calibration: np.ndarray,
    score: Score,
    alpha: float | None,
    max_level: int = 1,
) -> Anomaly:
    """``calibration``: the held-out rows' values of ``score`` for the same combination,
    ascending; ``max_level``: the model's highest level (1 for binary models)."""
    if score == "complexity_corrected":
        typicality = conformal.complexity_corrected(log_likelihood, rows, max_level)
    else:
        typicality = log_likelihood
    p_value = conformal.p_values(calibration, typicality)
    anomalous = p_value <= alpha if alpha is not None else None
    return Anomaly(score, -typicality, p_value, alpha, anomalous)


def explanations(
    rows: np.ndarray,
    per_member: np.ndarray,
    per_dimension: np.ndarray,
    weights: np.ndarray,
    count: int,
) -> list[list[Surprise]]:
    """Per row, its ``count`` most surprising dimensions, most surprising first (ties: lower
    index first), under the member with the highest posterior weight for that row."""
    member = responsibilities(per_member, weights).argmax(axis=1)
    surprise = -per_dimension[np.arange(len(rows)), member]  # [B, D]
    order = np.argsort(-surprise, axis=1, kind="stable")[:, :count]
    return [
        [Surprise(int(d), float(rows[i, d]), float(surprise[i, d])) for d in order[i]]
        for i in range(len(rows))
    ]
