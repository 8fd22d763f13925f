"""The normaliser estimators against enumeration over all 2^D rows of a D=8 artifact."""

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.normaliser import (
    ROW_MEMBERS,
    bernstein_upper,
    estimate_log_normaliser,
    in_pieces,
    logit_average_log_prob,
    logit_average_sampler,
    product_sampler,
    rejection_sample_product,
)
from service.contract.mixture import product_log_unnormalised, product_log_weights
from service.inference.engine import Engine
from service.settings import Settings
from service.transport.app import create_app
from tests.conftest import train_tiny, write_splits
from tests.test_service_math import all_binary, index_of, tv_bound

SEEDS = range(5)


@pytest.fixture(scope="module")
def product_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """D=8, members without hidden layers (logistic conditionals): they cannot all represent the
    data exactly in their orderings, so they disagree and the product differs from the mixture.
    Exported with the product's normaliser in the manifest."""
    from model.export import export

    data = write_splits(tmp_path_factory.mktemp("poe-data"), 8)
    run = tmp_path_factory.mktemp("poe-run")
    out = tmp_path_factory.mktemp("artifacts") / "poe"
    export(train_tiny(run, data, hidden_sizes=[], num_masks=4, epochs=30), out, product=True)
    return out


@pytest.fixture(scope="module")
def engine(product_artifact: Path) -> Engine:
    return Engine.load(product_artifact)


@pytest.fixture(scope="module")
def every_row(engine: Engine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 2^D rows with their member log-likelihoods and logits."""
    rows = all_binary(engine.dim)
    log_probs, logits = engine.forward(rows)
    return rows, log_probs, logits


def exact_log_z(log_unnormalised: np.ndarray) -> float:
    return float(np.logaddexp.reduce(log_unnormalised))


def test_product_weights_lie_in_unit_interval(engine: Engine, every_row: tuple) -> None:
    _, log_probs, _ = every_row
    log_r = product_log_weights(log_probs, engine.weights)
    assert np.isfinite(log_r).all()
    assert (log_r <= 0).all()
    assert exact_log_z(product_log_unnormalised(log_probs, engine.weights)) < 0
    # Members disagree on some rows, so the weights are not all 1 (the test has something to see).
    assert log_r.min() < -0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_product_estimate_agrees_with_enumeration(
    engine: Engine, every_row: tuple, seed: int
) -> None:
    _, log_probs, _ = every_row
    truth = exact_log_z(product_log_unnormalised(log_probs, engine.weights))
    estimate = estimate_log_normaliser(
        product_sampler(engine, np.random.default_rng(seed)),
        bounded=True,
        target_relative_se=0.002,
        chunk=4000,
    )
    assert estimate.log_z_se < 0.002
    assert abs(estimate.log_z - truth) < 3 * estimate.log_z_se
    assert estimate.log_z_upper is not None and estimate.log_z_upper >= truth
    assert estimate.log_z_lower <= truth


def test_bernstein_bound_covers_the_mean() -> None:
    """Bernoulli(0.05) draws, n=200: the 95% bound lies above the true mean in (nearly) all runs."""
    rng = np.random.default_rng(0)
    draws = rng.random((1000, 200)) < 0.05
    bounds = [bernstein_upper(d.mean(), d.var(ddof=1), len(d), 0.05) for d in draws]
    assert np.mean(np.array(bounds) < 0.05) <= 0.05
    assert np.median(bounds) < 0.3  # and it is not vacuous


def test_rejection_sampler_draws_the_product(engine: Engine, every_row: tuple) -> None:
    rows, log_probs, _ = every_row
    log_f = product_log_unnormalised(log_probs, engine.weights)
    p = np.exp(log_f - exact_log_z(log_f))
    rng = np.random.default_rng(1)
    n = 50_000
    samples, rate = rejection_sample_product(
        lambda m: engine.sample(m, rng), engine.member_log_probs, engine.weights, n, rng
    )
    assert samples.shape == (n, engine.dim)
    assert np.isclose(rate, np.exp(exact_log_z(log_f)), rtol=0.05)
    frequencies = np.bincount(index_of(samples), minlength=len(rows)) / n
    tv = 0.5 * np.abs(frequencies - p).sum()
    bound = tv_bound(p, n, np.random.default_rng(12345))
    assert tv < bound
    # Power: the mixture itself is farther from the product than that.
    mixture = np.exp(engine.mixture(log_probs))
    assert 0.5 * np.abs(mixture - p).sum() > bound


def test_logit_average_of_one_member_is_that_member(engine: Engine, every_row: tuple) -> None:
    rows, log_probs, logits = every_row
    one_hot = np.eye(len(engine.weights))[0]
    np.testing.assert_allclose(logit_average_log_prob(rows, logits, one_hot), log_probs[:, 0], 1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_logit_average_normaliser_agrees_with_enumeration(
    engine: Engine, every_row: tuple, seed: int
) -> None:
    rows, _, logits = every_row
    uniform = np.ones(len(engine.weights))
    truth = exact_log_z(logit_average_log_prob(rows, logits, uniform))
    estimate = estimate_log_normaliser(
        logit_average_sampler(engine, np.random.default_rng(seed)),
        bounded=False,
        target_relative_se=0.003,
        chunk=4000,
    )
    assert estimate.log_z_upper is None
    assert abs(estimate.log_z - truth) < 3 * estimate.log_z_se
    assert estimate.log_z_lower <= truth
    assert 0 < estimate.max_weight_share < 1


def test_export_stores_the_normaliser(engine: Engine, every_row: tuple) -> None:
    _, log_probs, _ = every_row
    truth = exact_log_z(product_log_unnormalised(log_probs, engine.weights))
    normaliser = engine.manifest.product_normaliser
    assert normaliser is not None and normaliser.num_samples > 0
    assert abs(normaliser.log_z - truth) < 3 * normaliser.standard_error
    assert normaliser.upper_bound >= truth


def test_served_product_is_normalised(product_artifact: Path, every_row: tuple) -> None:
    rows, _, _ = every_row
    body = {"inputs": rows.astype(int).tolist()}
    with TestClient(create_app(Settings(model_dir=product_artifact, max_rows=1024))) as http:
        mixture = http.post("/v1/log-likelihood", json=body).json()
        product = http.post("/v1/log-likelihood", json={**body, "combination": "product"}).json()
        missing = [[None, *row[1:]] for row in body["inputs"][:2]]
        refused = http.post(
            "/v1/log-likelihood", json={"inputs": missing, "combination": "product"}
        )
    assert mixture["combination"] == "mixture"
    assert np.isclose(np.exp(mixture["log_likelihood"]).sum(), 1.0, atol=1e-4)
    assert product["combination"] == "product"
    normaliser = product["product_normaliser"]
    # Normalised up to the estimate's own error: sum_x p(x) = exp(log Z - estimated log Z).
    total = np.exp(product["log_likelihood"]).sum()
    assert abs(np.log(total)) < 3 * normaliser["standard_error"] + 1e-6
    assert not np.allclose(product["log_likelihood"], mixture["log_likelihood"], atol=1e-3)
    assert refused.status_code == 422, refused.text


def test_product_needs_an_exported_normaliser(tiny_artifact: Path) -> None:
    with TestClient(create_app(Settings(model_dir=tiny_artifact))) as http:
        response = http.post(
            "/v1/log-likelihood", json={"inputs": [[0] * 8], "combination": "product"}
        )
    assert response.status_code == 422, response.text
    assert "combination" in response.text


@pytest.mark.parametrize(("rows", "members"), [(10_000, 128), (10_000, 8), (3, 500), (1, 1)])
def test_normaliser_draws_are_scored_in_pieces_of_bounded_rows_times_members(
    rows: int, members: int
) -> None:
    x = np.arange(rows * 2).reshape(rows, 2)
    pieces = in_pieces(x, members)
    assert all(len(piece) * members <= max(ROW_MEMBERS, members) for piece in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), x)
