"""The per-dimension schema's math, checked where it can fail: each family's conditionals are
normalised (for extreme parameters too), torch, the ONNX graph and the float64 reference agree,
and masks keep every unit of a dimension autoregressive."""

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy import stats

from model.made import MADE
from model.onnx_graph import build_graph
from service.contract import parity
from service.contract.masks import draw_pool, input_degrees
from service.contract.sampler import member_nets
from service.contract.schema import (
    GAUSSIAN_MIN_LOG_SCALE,
    MAX_LOG_SCALE,
    Bernoulli,
    Categorical,
    GaussianMixture,
    Ordinal,
    Schema,
    discretized_logistic_log_prob,
)
from service.contract.schema_sampler import SchemaSampler

MIXED = Schema(
    [
        Bernoulli(),
        Categorical(classes=3),
        Ordinal(levels=5, components=2),
        Categorical(classes=4, labels=["a", "b", "c", "d"]),
    ]
)
WIDE = Schema(
    [Ordinal(levels=256, components=3), Bernoulli(), Categorical(classes=17), Ordinal(levels=17)]
)

# A table: real columns (one far from 0 in its own units, one very narrow) among discrete ones.
TABLE = Schema(
    [
        GaussianMixture(name="income", components=3, mean=5e4, scale=2e4),
        Categorical(name="job", classes=3, labels=["a", "b", "c"]),
        GaussianMixture(name="ratio", components=2, mean=-1.0, scale=0.01),
        Bernoulli(name="flag"),
        Ordinal(name="size", levels=5, components=2),
    ]
)

EXTREME_MEANS = [-1e4, -3.0, -1.0, -0.999, 0.0, 0.42, 1.0, 3.0, 1e4]
EXTREME_LOG_SCALES = [-50.0, -7.0, -3.0, 0.0, 3.0, 7.0, 50.0]


@pytest.mark.parametrize("levels", [2, 5, 17, 256])
def test_discretized_logistic_sums_to_one_for_extreme_parameters(levels: int) -> None:
    grid = np.array(list(itertools.product(EXTREME_MEANS, EXTREME_LOG_SCALES)))
    rng = np.random.default_rng(levels)
    m = 3
    means = grid[:, :1] + rng.normal(scale=1e-3, size=(len(grid), m))
    log_scales = grid[:, 1:] + rng.normal(scale=1e-3, size=(len(grid), m))
    logits = rng.normal(scale=5, size=(len(grid), m))
    x = np.arange(levels, dtype=np.float64)
    log_p = discretized_logistic_log_prob(
        x[None, :], logits[:, None], means[:, None], log_scales[:, None], levels
    )
    assert np.isfinite(log_p).all()
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, atol=1e-6)


def test_a_sharp_component_puts_its_mass_on_the_nearest_level() -> None:
    levels = 17
    centre_of_level_5 = 2 * 5 / (levels - 1) - 1
    log_p = discretized_logistic_log_prob(
        np.arange(levels)[None, :],
        np.zeros((1, 1, 1)),
        np.full((1, 1, 1), centre_of_level_5),
        np.full((1, 1, 1), -7.0),
        levels,
    )
    assert np.exp(log_p[0, 5]) > 0.999


@pytest.mark.parametrize("schema", [MIXED, WIDE], ids=["mixed", "wide"])
def test_every_dimensions_levels_sum_to_one(schema: Schema) -> None:
    rng = np.random.default_rng(0)
    params = rng.normal(scale=4, size=(20, schema.output_units))
    for d in range(schema.dim):
        units = params[:, schema.output_offsets[d] : schema.output_offsets[d + 1]]
        np.testing.assert_allclose(
            np.exp(schema.level_log_probs(d, units)).sum(axis=1), 1.0, atol=1e-9
        )


def test_log_terms_are_the_levels_probabilities_of_the_rows() -> None:
    rng = np.random.default_rng(1)
    params = rng.normal(scale=3, size=(30, MIXED.output_units))
    rows = MIXED.random_rows(30, rng)
    terms = MIXED.log_terms(params, rows)
    for d in range(MIXED.dim):
        levels = MIXED.level_log_probs(
            d, params[:, MIXED.output_offsets[d] : MIXED.output_offsets[d + 1]]
        )
        np.testing.assert_allclose(terms[:, d], levels[np.arange(30), rows[:, d].astype(int)])


def test_invalid_values_are_found_where_they_are() -> None:
    rows = np.array([[0, 2, 4, 3], [1, 1, 5, 0]], dtype=np.float32)
    assert MIXED.first_invalid(rows) == (1, 2)  # ordinal of 5 levels: 0..4
    assert MIXED.first_invalid(np.array([[0, 1.5, 0, 0]])) == (0, 1)
    assert MIXED.first_invalid(np.array([[0, np.nan, 0, 0]])) == (0, 1)
    assert MIXED.first_invalid(np.array([[0, np.nan, 0, 0]]), allow_missing=True) is None
    assert MIXED.first_invalid(np.array([[-1, 0, 0, 0]])) == (0, 0)


def made(
    schema: Schema, hidden: list[int], members: int = 3, seed: int = 0, sharpen: float = 4.0
) -> MADE:
    torch.manual_seed(seed)
    pool = draw_pool(members, schema.dim, hidden, "random", seed)
    model = MADE(schema.dim, hidden, pool, direct=True, schema=schema).double()
    with torch.no_grad():  # sharpen the weights: far from the easy region around 0
        for parameter in model.parameters():
            parameter.mul_(sharpen)
    return model


@pytest.mark.parametrize("schema", [WIDE, TABLE], ids=["wide", "table"])
@pytest.mark.parametrize("hidden", [[], [12], [12, 9]], ids=["none", "one", "two"])
def test_torch_loss_equals_the_float64_reference(schema: Schema, hidden: list[int]) -> None:
    model = made(schema, hidden)
    rows = schema.random_rows(40, np.random.default_rng(2)).astype(np.float64)
    x = torch.as_tensor(rows)
    for k in range(model.num_members):
        with torch.no_grad():
            outputs = model(x, k).numpy()
            torch_lp = model.log_prob(x, k).numpy()
        reference = schema.log_terms(outputs, rows).sum(axis=1)
        np.testing.assert_allclose(torch_lp, reference, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("schema", [MIXED, TABLE], ids=["mixed", "table"])
@pytest.mark.parametrize("hidden", [[], [10], [10, 7]], ids=["none", "one", "two"])
def test_every_output_unit_reads_only_earlier_dimensions(schema: Schema, hidden: list[int]) -> None:
    """By gradients: d(output unit of dimension d) / d(input unit of dimension e) is zero unless
    e comes before d in the member's ordering, for every unit of multi-unit dimensions."""
    model = made(schema, hidden)
    encoded = torch.as_tensor(schema.encode(schema.random_rows(1, np.random.default_rng(3))))
    for k in range(model.num_members):

        def network(inputs: torch.Tensor, k: int = k) -> torch.Tensor:
            h = inputs
            for layer in model.layers[:-1]:
                h = torch.relu(layer(h, k))
            return model.layers[-1](h, k) + model.direct(inputs, k)

        jacobian = torch.autograd.functional.jacobian(network, encoded)[0, :, 0].numpy()
        position = input_degrees(model.pool.orderings[k])
        later = (
            position[schema.input_unit_dims][None, :] >= position[schema.output_unit_dims][:, None]
        )
        assert not jacobian[later].any()
        assert jacobian[~later].any()  # and it does read what it may


@pytest.mark.parametrize("hidden", [[10], [10, 7]], ids=["one", "two"])
def test_mask_products_connect_only_earlier_dimensions(hidden: list[int]) -> None:
    """Torch-free: the product of a member's masks (paths from input units to output units)
    is zero from every unit of a dimension at or after the output's dimension."""
    pool = draw_pool(4, MIXED.dim, hidden, "random", 5)
    for k in range(pool.num_members):
        masks = pool.layer_masks(k, MIXED)
        paths = masks[0].astype(np.int64)
        for mask in masks[1:]:
            paths = mask.astype(np.int64) @ paths
        paths = paths + pool.direct_mask(k, MIXED)
        position = input_degrees(pool.orderings[k])
        later = (
            position[MIXED.input_unit_dims][None, :] >= position[MIXED.output_unit_dims][:, None]
        )
        assert paths.shape == (MIXED.output_units, MIXED.input_units)
        assert not paths[later].any()


@pytest.mark.parametrize("schema", [MIXED, WIDE, TABLE], ids=["mixed", "wide", "table"])
@pytest.mark.parametrize("hidden", [[], [16], [16, 8]], ids=["none", "one", "two"])
def test_graph_matches_torch_and_the_float64_reference(schema: Schema, hidden: list[int]) -> None:
    model = made(schema, hidden).float()
    weights = [layer.weight.detach().numpy() for layer in model.layers]
    biases = [layer.bias.detach().numpy() for layer in model.layers]
    graph = build_graph(model.pool, weights, biases, model.direct.weight.detach().numpy(), schema)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = schema.random_rows(64, np.random.default_rng(4))
    log_prob, params = session.run(["log_prob", "params"], {"x": rows})
    with torch.no_grad():
        x = torch.as_tensor(rows)
        torch_params = torch.stack([model(x, k) for k in range(3)], dim=1).numpy()
    np.testing.assert_allclose(params, torch_params, rtol=1e-4, atol=1e-4)
    nets = member_nets(model.pool, weights, biases, model.direct.weight.detach().numpy(), schema)
    reference = parity.reference_log_probs(nets, rows, schema)
    assert parity.worst_gap(log_prob, reference).within


@pytest.mark.parametrize("hidden", [[16], [16, 12], [12, 10, 8]], ids=["one", "two", "three"])
@pytest.mark.parametrize("schema", [MIXED, TABLE], ids=["mixed", "table"])
def test_sampler_matches_full_forward_passes_fed_the_same_uniforms(
    schema: Schema, hidden: list[int]
) -> None:
    # Sharpened as much in all: 4x over one layer, compounding no further with depth (float32
    # products of weights 4x larger per layer move a real draw by more than 1e-3 of its scale).
    model = made(schema, hidden, members=2, sharpen=4.0 ** (1 / len(hidden))).float()
    weights = [layer.weight.detach().numpy() for layer in model.layers]
    biases = [layer.bias.detach().numpy() for layer in model.layers]
    nets = member_nets(model.pool, weights, biases, model.direct.weight.detach().numpy(), schema)
    rng = np.random.default_rng(6)
    n = 400
    members = rng.integers(0, 2, size=n)
    uniforms = rng.random((n, schema.dim))
    given = np.full((n, schema.dim), np.nan, dtype=np.float32)
    x, _ = SchemaSampler(nets, schema).draw(members, given, uniforms)
    reference = np.zeros_like(x)
    with torch.no_grad():
        for i in range(n):
            k = int(members[i])
            for t, d in enumerate(model.pool.orderings[k]):
                outputs = model(torch.as_tensor(reference[i : i + 1]), k).numpy()
                units = outputs[:, schema.output_offsets[d] : schema.output_offsets[d + 1]]
                reference[i, d] = schema.draw(int(d), units, uniforms[i : i + 1, t])[0]
    # Levels are drawn identically; real values agree to the float32 rounding of the two
    # products, magnified by the sharpened weights (within 1e-3 of their column's scale).
    discrete = ~schema.continuous
    assert np.array_equal(x[:, discrete], reference[:, discrete])
    gap = np.abs(x - reference)[:, ~discrete] / schema.scales[~discrete]
    assert gap.max(initial=0.0) < 1e-3


@pytest.mark.parametrize("d", [0, 2], ids=["income", "ratio"])
def test_real_draws_follow_the_mixture_cdf(d: int) -> None:
    """Draws of a real column from uniforms against its mixture's CDF in the data's units
    (Kolmogorov-Smirnov), and not against a slightly shifted one."""
    dimension = TABLE.dimensions[d]
    rng = np.random.default_rng(d)
    width = TABLE.output_offsets[d + 1] - TABLE.output_offsets[d]
    m = width // 3
    n = 20_000
    for spread in (0.5, 2.0):
        params = rng.normal(scale=spread, size=width)
        values = TABLE.draw(d, np.broadcast_to(params, (n, width)), rng.random(n))
        weights = np.exp(params[:m]) / np.exp(params[:m]).sum()
        centres = dimension.mean + dimension.scale * params[m : 2 * m]
        scales = dimension.scale * np.exp(
            np.clip(params[2 * m :], GAUSSIAN_MIN_LOG_SCALE, MAX_LOG_SCALE)
        )

        mixture = (weights, centres, scales)
        assert stats.kstest(values, lambda v, f=mixture: mixture_cdf(v, *f)).pvalue > 1e-3
        mean = weights @ centres
        shift = 0.1 * np.sqrt(weights @ (scales**2 + centres**2) - mean**2)  # a tenth of its sd
        shifted = stats.kstest(values, lambda v, f=mixture, s=shift: mixture_cdf(v - s, *f))
        assert shifted.pvalue < 1e-6


def mixture_cdf(
    values: np.ndarray, weights: np.ndarray, centres: np.ndarray, scales: np.ndarray
) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)[..., None]
    return (weights * stats.norm.cdf(v, centres, scales)).sum(axis=-1)


@pytest.mark.parametrize("d", range(WIDE.dim), ids=["ordinal-256", "bernoulli", "cat-17", "ord-17"])
def test_draws_follow_the_level_probabilities(d: int) -> None:
    """Each family's draws from uniforms, for a few parameter settings, against its exact level
    probabilities: total variation within sampling noise, and far from a shifted distribution."""
    rng = np.random.default_rng(d)
    width = WIDE.output_offsets[d + 1] - WIDE.output_offsets[d]
    n = 40_000
    for scale in (0.5, 3.0):
        params = np.broadcast_to(rng.normal(scale=scale, size=width), (n, width))
        exact = np.exp(WIDE.level_log_probs(d, params[:1]))[0]
        values = WIDE.draw(d, params, rng.random(n)).astype(np.int64)
        frequencies = np.bincount(values, minlength=len(exact)) / n
        noise = np.sqrt(exact * (1 - exact) / n).sum()  # the expected |error| summed, roughly
        assert 0.5 * np.abs(frequencies - exact).sum() < 2 * noise + 1e-3
        assert 0.5 * np.abs(frequencies - np.roll(exact, 1)).sum() > 4 * noise
