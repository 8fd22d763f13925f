"""MAP-EM mixture weights under a symmetric Dirichlet(alpha) prior: what the prior changes.

Member 2 explains one row far better than the others and no other row, so maximum likelihood
gives it a small positive weight (about 0.004); a sparse prior (alpha < 1) must remove it, a
flattening one (alpha > 1) must raise it, and large alpha must approach uniform weights.
"""

import numpy as np
import pytest

from service.contract.mixture import fit_em_weights, mixture_log_prob, responsibilities

ALPHAS = (0.3, 0.9, 2.0, 10.0, 100.0)


@pytest.fixture(scope="module")
def log_probs() -> np.ndarray:
    """[200, 3] member log-likelihoods: 0 best, 1 a little worse, 2 good on row 0 only."""
    rng = np.random.default_rng(0)
    base = rng.normal(-10, 1, 200)
    matrix = np.stack([base, base + rng.normal(-0.3, 1, 200), base - 20], axis=1)
    matrix[0, 2] = matrix[0, 0] + 7.0
    return matrix


def map_m_step(member_log_probs: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """The closed-form M-step: w_k proportional to max(0, N_k + alpha - 1)."""
    counts = responsibilities(member_log_probs, weights).sum(axis=0)
    unnormalised = np.maximum(0.0, counts + alpha - 1.0)
    return unnormalised / unnormalised.sum()


@pytest.mark.parametrize("alpha", ALPHAS)
def test_one_iteration_is_the_closed_form_map_m_step(log_probs: np.ndarray, alpha: float) -> None:
    uniform = np.full(3, 1 / 3)
    step = fit_em_weights(log_probs, alpha=alpha, max_iterations=1)
    np.testing.assert_allclose(step, map_m_step(log_probs, uniform, alpha), rtol=0, atol=1e-12)


@pytest.mark.parametrize("alpha", [2.0, 10.0, 100.0])
def test_converged_weights_are_a_fixed_point_of_the_map_m_step(
    log_probs: np.ndarray, alpha: float
) -> None:
    weights = fit_em_weights(log_probs, alpha=alpha)
    np.testing.assert_allclose(map_m_step(log_probs, weights, alpha), weights, atol=1e-6)


def test_the_prior_moves_the_weights_monotonically(log_probs: np.ndarray) -> None:
    """Raising alpha lowers the largest weight and raises the smallest, towards uniform."""
    ml = fit_em_weights(log_probs, alpha=1.0)
    assert 1e-3 < ml[2] < 1e-2  # the member a sparse prior removes is not zero without one
    fits = np.array([fit_em_weights(log_probs, alpha=a) for a in (1.0, 2.0, 10.0, 100.0, 1e4)])
    assert np.all(np.diff(fits[:, 0]) < 0) and np.all(np.diff(fits[:, 2]) > 0)
    np.testing.assert_allclose(fits[-1], 1 / 3, atol=5e-3)


def test_a_sparse_prior_zeroes_the_member_that_maximum_likelihood_keeps(
    log_probs: np.ndarray,
) -> None:
    ml = fit_em_weights(log_probs, alpha=1.0)
    for alpha in (0.01, 0.5):
        sparse = fit_em_weights(log_probs, alpha=alpha)
        assert sparse[2] == 0.0 and np.all(sparse[:2] > 0.05)
        assert abs(sparse.sum() - 1) < 1e-12
    mild = fit_em_weights(log_probs, alpha=0.9)
    assert 0 < mild[2] < ml[2]  # a weaker sparse prior shrinks it without removing it
    # Maximum likelihood is what alpha = 1 maximises: no prior fit scores better on these rows.
    best = mixture_log_prob(log_probs, ml).mean()
    for alpha in ALPHAS:
        assert (
            mixture_log_prob(log_probs, fit_em_weights(log_probs, alpha=alpha)).mean()
            <= best + 1e-9
        )
