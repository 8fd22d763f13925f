"""The network is autoregressive for every member, and each member and the mixture normalise."""

import itertools

import numpy as np
import pytest
import torch

from model.made import MADE
from service.contract.masks import draw_pool
from service.contract.mixture import fit_em_weights, mixture_log_prob


def all_binary(dim: int) -> np.ndarray:
    return np.array(list(itertools.product([0, 1], repeat=dim)), dtype=np.float32)


@pytest.mark.parametrize(
    ("dim", "hidden", "ordering", "direct"),
    [
        (7, [], "random", False),
        (7, [12], "random", True),
        (10, [20, 15], "natural-first", False),
        (10, [5, 30, 8], "random", True),
        (5, [64], "natural", True),
    ],
)
def test_every_member_is_autoregressive(dim, hidden, ordering, direct):
    torch.manual_seed(0)
    pool = draw_pool(4, dim, hidden, ordering, seed=3)
    made = MADE(dim, hidden, pool, direct=direct)
    for layer in made.layers:  # random biases and weights so no gradient vanishes by accident
        torch.nn.init.normal_(layer.weight)
    for k in range(pool.num_members):
        position = np.argsort(pool.orderings[k])
        x = torch.rand(3, dim, requires_grad=True)
        for d in range(dim):
            (grad,) = torch.autograd.grad(made(x, k)[:, d].sum(), x)
            may_depend = position < position[d]
            assert torch.all(grad[:, ~torch.as_tensor(may_depend)] == 0), (k, d)
        # And the masks are not empty: the last output of the ordering sees some input.
        last = pool.orderings[k][-1]
        (grad,) = torch.autograd.grad(made(x, k)[:, last].sum(), x)
        assert grad.abs().sum() > 0


def test_dropout_keeps_members_autoregressive_and_is_off_in_evaluation():
    """Dropout thins hidden units in training mode only; no dropped unit opens a path."""
    torch.manual_seed(0)
    dim, hidden = 9, [40, 30]
    pool = draw_pool(3, dim, hidden, "random", seed=1)
    made = MADE(dim, hidden, pool, direct=True, dropout=0.5).train()
    x = torch.rand(64, dim, requires_grad=True)
    for k in range(pool.num_members):
        position = torch.as_tensor(np.argsort(pool.orderings[k]))
        for d in range(dim):
            (grad,) = torch.autograd.grad(made(x, k)[:, d].sum(), x)
            assert torch.all(grad[:, position >= position[d]] == 0), (k, d)
    assert not torch.equal(made(x, 0), made(x, 0))  # a fresh thinning each step
    made.eval()
    assert torch.equal(made(x, 0), made(x, 0))
    undropped = MADE(dim, hidden, pool, direct=True).eval()
    undropped.load_state_dict(made.state_dict())
    assert torch.equal(made(x, 0), undropped(x, 0))


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_dropout_outside_its_range_is_refused(dropout):
    pool = draw_pool(1, 4, [8], "random", seed=0)
    with pytest.raises(ValueError, match="dropout"):
        MADE(4, [8], pool, dropout=dropout)


def test_members_and_mixtures_normalise(tiny_trained):
    made = tiny_trained.model
    rows = all_binary(made.dim)
    with torch.no_grad():
        log_probs = made.member_log_probs(torch.as_tensor(rows)).double().numpy()
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=0), 1.0, atol=1e-4)
    k = made.num_members
    for weights in (np.full(k, 1 / k), np.array(tiny_trained.report.em_weights)):
        assert abs(np.exp(mixture_log_prob(log_probs, weights)).sum() - 1) < 1e-4


def test_em_weights_improve_likelihood_and_prior_sparsifies():
    rng = np.random.default_rng(0)
    # Member 0 explains the data best, member 2 never does.
    log_probs = np.stack(
        [rng.normal(-10, 1, 500), rng.normal(-11, 1, 500), rng.normal(-30, 1, 500)], axis=1
    )
    uniform = np.full(3, 1 / 3)
    ml = fit_em_weights(log_probs, alpha=1.0)
    assert mixture_log_prob(log_probs, ml).mean() > mixture_log_prob(log_probs, uniform).mean()
    assert ml[0] > ml[1] > ml[2]
    sparse = fit_em_weights(log_probs, alpha=0.01)
    assert sparse[2] == 0.0 and abs(sparse.sum() - 1) < 1e-12
