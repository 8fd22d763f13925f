"""Real-valued columns (``gaussian_mixture``): the density is a normalised density in the data's
units, checked where it can fail. Numerical integration of a trained mixed model's density over
a wide grid (its categorical column enumerated) gives 1; exact samples, marginals and completions
follow the model's own CDFs, computed from that grid; rescaling a column by s shifts every log
density by -log s."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from service.contract.mixture import product_log_unnormalised
from service.contract.schema import (
    GAUSSIAN_MIN_LOG_SCALE,
    MAX_LOG_SCALE,
    Categorical,
    GaussianMixture,
    Schema,
    gaussian_mixture_log_density,
)
from service.inference.engine import Engine
from tests.conftest import served, train_tiny

# Column a ~ N(50, 10); c in {x, y, z} depends on a; b depends on both, tight in one class.
A_GRID = np.linspace(-20.0, 120.0, 421)
B_GRID = np.linspace(-25.0, 25.0, 801)
CELL = (A_GRID[1] - A_GRID[0]) * (B_GRID[1] - B_GRID[0])


def table_rows(n: int, seed: int, scale_b: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(50.0, 10.0, n)
    c = (a > 50).astype(int) + rng.integers(0, 2, n)
    b = np.where(c == 1, 0.3 * (a - 50) + rng.normal(0, 1, n), rng.normal(-2, 0.5, n))
    return np.stack([a, c, b * scale_b], axis=1).astype(np.float32)


def write_table(folder: Path, scale_b: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "valid", "test")):
        np.save(folder / f"{split}.npy", table_rows(1500 if split == "train" else 300, i, scale_b))
    train = table_rows(1500, 0, scale_b)
    columns = [
        {"name": "a", "family": "gaussian_mixture", "components": 3,
         "mean": float(train[:, 0].mean()), "scale": float(train[:, 0].std())},
        {"name": "c", "family": "categorical", "classes": 3, "labels": ["x", "y", "z"]},
        {"name": "b", "family": "gaussian_mixture", "components": 3,
         "mean": float(train[:, 2].mean()), "scale": float(train[:, 2].std())},
    ]  # fmt: skip
    (folder / "schema.json").write_text(json.dumps({"columns": columns}))
    return folder


@pytest.fixture(scope="module")
def table_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.export import export

    data = write_table(tmp_path_factory.mktemp("table-data"))
    trained = train_tiny(tmp_path_factory.mktemp("table-run"), data, epochs=12, hidden_sizes=[32])
    out = tmp_path_factory.mktemp("artifacts") / "table"
    export(trained, out, product=True)
    return out


@pytest.fixture(scope="module")
def engine(table_artifact: Path) -> Engine:
    return Engine.load(table_artifact)


@pytest.fixture(scope="module")
def grid_densities(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """Mixture and member densities on the grid: [3, len(A), len(B)] and [3, len(A), len(B), K]."""
    a, b = np.meshgrid(A_GRID, B_GRID, indexing="ij")
    mixture, members = [], []
    for c in range(3):
        rows = np.stack([a.ravel(), np.full(a.size, c), b.ravel()], axis=1).astype(np.float32)
        result = engine.log_likelihood(rows)
        mixture.append(np.exp(result.log_likelihood).reshape(a.shape))
        members.append(np.exp(result.per_member).reshape(*a.shape, -1))
    return np.stack(mixture), np.stack(members)


def test_the_density_matches_an_independent_formula_for_extreme_parameters() -> None:
    rng = np.random.default_rng(0)
    m = 3
    for log_scale in (-50.0, -7.0, -2.0, 0.0, 3.0, 7.0, 50.0):
        logits = rng.normal(scale=4, size=m)
        means = rng.normal(scale=3, size=m)
        raw = log_scale + rng.normal(scale=1e-3, size=m)
        x = 7.0 + 0.5 * np.linspace(-30, 30, 61)
        got = gaussian_mixture_log_density(x, logits, means, raw, 7.0, 0.5)
        weights = np.exp(logits) / np.exp(logits).sum()
        scales = 0.5 * np.exp(np.clip(raw, GAUSSIAN_MIN_LOG_SCALE, MAX_LOG_SCALE))
        pdfs = stats.norm.pdf(x[:, None], 7.0 + 0.5 * means, scales)  # [x, M]
        expected = np.log((weights * pdfs).sum(axis=1) + 1e-300)
        finite = expected > -600  # where the reference does not underflow
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("raw_log_scale", [-7.0, -1.0, 0.0, 2.0])
def test_a_conditional_integrates_to_one_in_the_datas_units(raw_log_scale: float) -> None:
    logits, means = np.array([0.3, -1.0]), np.array([-1.5, 2.0])
    raw = np.full(2, raw_log_scale)
    mean, scale = 1000.0, 250.0

    def density(x: float) -> float:
        return float(np.exp(gaussian_mixture_log_density(x, logits, means, raw, mean, scale)))

    centres = mean + scale * means
    # 12 component scales (clamped as the density clamps them): the tails are below 1e-30.
    width = 12 * scale * np.exp(max(raw_log_scale, GAUSSIAN_MIN_LOG_SCALE))
    total, _ = integrate.quad(
        density, centres.min() - width, centres.max() + width, points=centres, limit=2000
    )
    assert abs(total - 1.0) < 1e-6


def test_rescaling_a_column_shifts_the_log_density_by_minus_log_s() -> None:
    schema = Schema([GaussianMixture(mean=3.0, scale=2.0), Categorical(classes=2)])
    scaled = Schema([GaussianMixture(mean=3.0 * 40, scale=2.0 * 40), Categorical(classes=2)])
    rng = np.random.default_rng(1)
    params = rng.normal(size=(50, schema.output_units))
    rows = np.stack([rng.normal(3, 2, 50), rng.integers(0, 2, 50)], axis=1)
    moved = rows * [40.0, 1.0]
    np.testing.assert_allclose(
        scaled.log_terms(params, moved).sum(axis=1),
        schema.log_terms(params, rows).sum(axis=1) - np.log(40.0),
        atol=1e-10,
    )


def test_trained_members_mixture_and_product_integrate_to_one(
    engine: Engine, grid_densities: tuple[np.ndarray, np.ndarray]
) -> None:
    mixture, members = grid_densities
    assert abs(mixture.sum() * CELL - 1.0) < 1e-3
    np.testing.assert_allclose(members.sum(axis=(0, 1, 2)) * CELL, 1.0, atol=1e-3)
    # The product of experts: its unnormalised density integrates to Z, which export estimated.
    log_members = np.log(np.maximum(members.reshape(-1, members.shape[-1]), 1e-300))
    unnormalised = np.exp(product_log_unnormalised(log_members, engine.weights))
    log_z = np.log(unnormalised.sum() * CELL)
    normaliser = engine.manifest.product_normaliser
    assert abs(normaliser.log_z - log_z) < 5 * normaliser.standard_error + 2e-3
    assert log_z <= normaliser.upper_bound + 1e-3


def test_the_training_report_and_engine_agree_on_test_rows(
    table_artifact: Path, engine: Engine
) -> None:
    rows = table_rows(300, 2)
    nll = -engine.log_likelihood(rows).log_likelihood.mean()
    reported = engine.manifest.metrics["test"].shipped_mixture
    assert abs(nll - reported) < 1e-3


def test_rescaling_a_column_of_the_data_shifts_served_log_densities(
    tmp_path: Path, engine: Engine
) -> None:
    """Trained on column b measured in units 1000 times smaller (the schema's scale follows),
    the network sees the same standardized inputs: every log density moves by -log 1000."""
    from model.export import export

    data = write_table(tmp_path / "data", scale_b=1000.0)
    trained = train_tiny(tmp_path / "run", data, epochs=12, hidden_sizes=[32])
    export(trained, tmp_path / "art")
    rescaled = Engine.load(tmp_path / "art")
    rows = table_rows(200, 5)
    moved = rows * np.array([1.0, 1.0, 1000.0], dtype=np.float32)
    np.testing.assert_allclose(
        rescaled.log_likelihood(moved).log_likelihood,
        engine.log_likelihood(rows).log_likelihood - np.log(1000.0),
        atol=2e-3,
    )


def grid_cdf(density: np.ndarray) -> np.ndarray:
    """The CDF on a grid's points from densities along it (trapezoid rule), normalised."""
    steps = 0.5 * (density[1:] + density[:-1])
    cdf = np.concatenate([[0.0], np.cumsum(steps)])
    return cdf / cdf[-1]


def ks_p_value(values: np.ndarray, grid: np.ndarray, cdf: np.ndarray) -> float:
    return float(stats.kstest(values, lambda v: np.interp(v, grid, cdf)).pvalue)


def test_samples_follow_the_models_own_marginals_and_conditionals(
    engine: Engine, grid_densities: tuple[np.ndarray, np.ndarray]
) -> None:
    mixture, _ = grid_densities
    samples = engine.sample(6000, np.random.default_rng(3))
    p_class = mixture.sum(axis=(1, 2)) * CELL
    frequencies = np.bincount(samples[:, 1].astype(int), minlength=3) / len(samples)
    assert 0.5 * np.abs(frequencies - p_class).sum() < 0.03
    density_a = mixture.sum(axis=(0, 2))
    assert ks_p_value(samples[:, 0], A_GRID, grid_cdf(density_a)) > 1e-3
    assert ks_p_value(samples[:, 0] + 2.0, A_GRID, grid_cdf(density_a)) < 1e-6  # it can fail
    for c in range(3):  # two dimensions: b given its class, against the joint's conditional
        in_class = samples[samples[:, 1] == c]
        cdf_b = grid_cdf(mixture[c].sum(axis=0))
        assert ks_p_value(in_class[:, 2], B_GRID, cdf_b) > 1e-3


@pytest.mark.parametrize("observed", [(0,), (2,), (0, 1), (1, 2)], ids=["a", "b", "a-c", "c-b"])
def test_marginals_match_numerical_integration_of_the_joint(
    engine: Engine, grid_densities: tuple[np.ndarray, np.ndarray], observed: tuple[int, ...]
) -> None:
    mixture, _ = grid_densities
    i, j = 150, 420  # a = 30, b = 1.25 on the grids
    row = np.array([[A_GRID[i], 1.0, B_GRID[j]]], dtype=np.float32)
    query = np.full_like(row, np.nan)
    query[0, list(observed)] = row[0, list(observed)]
    da, db = A_GRID[1] - A_GRID[0], B_GRID[1] - B_GRID[0]
    truth = {
        (0,): mixture[:, i, :].sum() * db,
        (2,): mixture[:, :, j].sum() * da,
        (0, 1): mixture[1, i, :].sum() * db,
        (1, 2): mixture[1, :, j].sum() * da,
    }[observed]
    marginal = engine.marginal(query, 8192, np.random.default_rng(4))
    error = marginal.standard_error[0]
    assert abs(marginal.log_likelihood[0] - np.log(truth)) < 5 * error + 2e-3


def test_completions_keep_observed_values_and_follow_the_conditional(
    engine: Engine, grid_densities: tuple[np.ndarray, np.ndarray]
) -> None:
    mixture, _ = grid_densities
    i = 210  # a = 50
    query = np.array([[A_GRID[i], np.nan, np.nan]], dtype=np.float32)
    completion = engine.complete(query, 2000, 8192, np.random.default_rng(5), max_particles=131072)
    draws = completion.samples[0]
    assert (draws[:, 0] == query[0, 0]).all()
    p_class = mixture[:, i, :].sum(axis=1)
    p_class /= p_class.sum()
    frequencies = np.bincount(draws[:, 1].astype(int), minlength=3) / len(draws)
    assert 0.5 * np.abs(frequencies - p_class).sum() < 0.06
    cdf_b = grid_cdf(mixture[:, i, :].sum(axis=0))
    assert ks_p_value(draws[:, 2], B_GRID, cdf_b) > 1e-3


def test_the_served_density_integrates_to_one_through_http(
    table_artifact: Path, grid_densities: tuple[np.ndarray, np.ndarray]
) -> None:
    """The same integral over rows sent as JSON (objects keyed by column name for one class,
    arrays with the label for the others), against the engine's grid."""
    mixture, _ = grid_densities
    a, b = A_GRID[::4], B_GRID[::4]  # a coarser grid: 106 x 201 rows a class over HTTP
    cell = (a[1] - a[0]) * (b[1] - b[0])
    total = 0.0
    with served(table_artifact, max_rows=25_000, max_body_bytes=1 << 26) as client:
        for c, label in enumerate(("x", "y", "z")):
            rows = [[float(i), label, float(j)] for i in a for j in b]
            if c == 0:
                rows = [{"a": i, "c": label, "b": j} for i, _, j in rows]
            answer = client.http.post("/v1/log-likelihood", json={"inputs": rows})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert "bits_per_dim" not in body  # densities have no bits per dimension
            density = np.exp(body["log_likelihood"])
            np.testing.assert_allclose(density, mixture[c][::4, ::4].ravel(), rtol=1e-4, atol=1e-9)
            total += density.sum() * cell
    assert abs(total - 1.0) < 1e-3


def test_calibration_keeps_no_complexity_scores_for_densities(engine: Engine) -> None:
    scores = engine.manifest.calibration.scores
    assert all(set(by_score) == {"log_likelihood"} for by_score in scores.values())


def test_a_density_models_negative_nll_is_served(table_artifact: Path, tmp_path: Path) -> None:
    """Densities above 1 give negative NLLs: valid for real columns (binary data's are refused,
    tests/test_bad_artifacts.py)."""
    copy = tmp_path / "artifact"
    shutil.copytree(table_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    test = manifest["metrics"]["test"]
    test.update(
        members=[-1.5] * len(test["members"]),
        uniform_mixture=-1.5,
        em_mixture=-1.5,
        shipped_mixture=-1.5,
    )
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert Engine.load(copy).manifest.metrics["test"].shipped_mixture == -1.5
