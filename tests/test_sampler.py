"""The blocked sampler against a straightforward reference: one full forward pass per dimension."""

import itertools

import numpy as np
import pytest

from service.contract.masks import draw_pool
from service.contract.sampler import (
    BLOCK,
    MemberNet,
    Sampler,
    ancestral,
    member_nets,
)

DIM = 2 * BLOCK + 7  # three blocks, the last one partial
TOLERANCE = 1e-4  # a flip is allowed only where u is this close to its Bernoulli probability


def random_nets(hidden: list[int], direct: bool, seed: int, members: int = 3) -> list[MemberNet]:
    pool = draw_pool(members, DIM, hidden, "random", seed)
    rng = np.random.default_rng(seed)
    sizes = [DIM, *hidden, DIM]
    weights = [rng.normal(0, 1.5 / np.sqrt(i), (o, i)) for i, o in itertools.pairwise(sizes)]
    biases = [rng.normal(0, 0.5, o) for o in sizes[1:]]
    direct_weight = rng.normal(0, 0.3, (DIM, DIM)) if direct else None
    return member_nets(pool, weights, biases, direct_weight)


def full_forward(net: MemberNet, x: np.ndarray) -> np.ndarray:
    """[n, D] float64 logits of every dimension from x [n, D], no incremental tricks."""
    h = x.astype(np.float64)
    for weight, bias in net.hidden:
        h = np.maximum(h @ weight.T.astype(np.float64) + bias, 0.0)
    logits = h @ net.out_weight.T.astype(np.float64) + net.out_bias
    if net.direct is not None:
        logits += x @ net.direct.T.astype(np.float64)
    return logits


def reference(net: MemberNet, given: np.ndarray, uniforms: np.ndarray):
    """Samples, log weights and the Bernoulli probability used at every (row, position)."""
    n, dim = given.shape
    x = np.zeros((n, dim))
    log_weight = np.zeros(n)
    probs = np.zeros((n, dim))
    for t, d in enumerate(net.ordering):
        p = 1.0 / (1.0 + np.exp(-full_forward(net, x)[:, d]))
        probs[:, t] = p
        observed = ~np.isnan(given[:, d])
        value = np.where(observed, given[:, d], uniforms[:, t] < p)
        log_weight += np.where(observed, np.log(np.where(value > 0, p, 1 - p)), 0.0)
        x[:, d] = value
    return x, log_weight, probs


def assert_matches_reference(net, given, uniforms, x, log_weight) -> None:
    """Rows agree with the reference up to the first near-tie flip; log weights agree closely."""
    ref_x, ref_log_weight, probs = reference(net, given, uniforms)
    in_order = (x != ref_x)[:, net.ordering]
    flipped = in_order.any(axis=1)
    for row in np.flatnonzero(flipped):
        t = int(np.argmax(in_order[row]))
        assert abs(uniforms[row, t] - probs[row, t]) < TOLERANCE, (row, t)
    assert flipped.mean() < 0.05
    same = ~flipped
    np.testing.assert_allclose(log_weight[same], ref_log_weight[same], rtol=1e-4, atol=1e-4)


CASES = [
    pytest.param([], True, id="no-hidden"),
    pytest.param([24], False, id="one-layer"),
    pytest.param([24], True, id="one-layer-direct"),
    pytest.param([20, 18], True, id="two-layers-direct"),
    pytest.param([16, 12, 10], False, id="three-layers"),
]


@pytest.mark.parametrize(("hidden", "direct"), CASES)
def test_free_samples_match_full_forward_reference(hidden, direct):
    rng = np.random.default_rng(1)
    for net in random_nets(hidden, direct, seed=len(hidden)):
        given = np.full((40, DIM), np.nan, dtype=np.float32)
        uniforms = rng.random((40, DIM))
        x, log_weight = ancestral(net, given, uniforms)
        assert set(np.unique(x)) <= {0.0, 1.0}
        assert_matches_reference(net, given, uniforms, x, log_weight)
        assert np.all(log_weight == 0.0)


@pytest.mark.parametrize(("hidden", "direct"), CASES)
def test_clamped_entries_are_kept_and_weighted_like_reference(hidden, direct):
    rng = np.random.default_rng(2)
    net = random_nets(hidden, direct, seed=7)[0]
    given = (rng.random((40, DIM)) < 0.5).astype(np.float32)
    given[rng.random((40, DIM)) < 0.5] = np.nan
    uniforms = rng.random((40, DIM))
    x, log_weight = ancestral(net, given, uniforms)
    observed = ~np.isnan(given)
    np.testing.assert_array_equal(x[observed], given[observed])
    assert_matches_reference(net, given, uniforms, x, log_weight)
    assert np.all(log_weight < 0.0)


def test_fully_given_row_weight_is_the_member_log_likelihood():
    net = random_nets([24], True, seed=3)[0]
    row = (np.random.default_rng(4).random((1, DIM)) < 0.5).astype(np.float32)
    _, log_weight = ancestral(net, row, np.full((1, DIM), 0.5))
    logits = full_forward(net, row)
    expected = (row * logits - np.logaddexp(0.0, logits)).sum()
    np.testing.assert_allclose(log_weight[0], expected, rtol=1e-5)


@pytest.mark.parametrize("hidden", [[], [24], [24, 16]])
def test_members_batched_together_equal_each_member_alone(hidden):
    nets = random_nets(hidden, True, seed=5, members=4)
    rng = np.random.default_rng(6)
    members = rng.integers(0, 3, size=50)  # member 3 unused: the plan is restricted to 0..2
    given = np.where(rng.random((50, DIM)) < 0.2, rng.random((50, DIM)) < 0.5, np.nan)
    given = given.astype(np.float32)
    uniforms = rng.random((50, DIM))
    x, log_weight = Sampler(nets).draw(members, given, uniforms)
    for k in range(3):
        rows = members == k
        alone_x, alone_weight = ancestral(nets[k], given[rows], uniforms[rows])
        np.testing.assert_array_equal(x[rows], alone_x)
        np.testing.assert_allclose(log_weight[rows], alone_weight, rtol=1e-6)


def test_no_rows_gives_empty_arrays():
    net = random_nets([8], False, seed=0)[0]
    x, log_weight = ancestral(net, np.empty((0, DIM), np.float32), np.empty((0, DIM)))
    assert x.shape == (0, DIM) and log_weight.shape == (0,)
