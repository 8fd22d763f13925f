"""Anomaly answers: held-out calibration rows, conformal p-values that keep their promise,
explanations that name the planted values, and the complexity-corrected score."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from model.data import FASHION_MNIST_DIR, DataError, Dataset, hold_out_calibration
from service.client import AnomalyOptions
from service.contract import conformal
from service.contract.artifact import read_manifest
from service.inference.engine import Engine
from tests.conftest import export_tiny, served, write_splits

ALPHAS = (0.01, 0.05, 0.1)


# -- the contract ------------------------------------------------------------------------------
def test_p_values_count_calibration_rows_at_or_below() -> None:
    calibration = np.array([1.0, 2.0, 2.0, 3.0])
    p = conformal.p_values(calibration, np.array([0.5, 2.0, 3.0, 9.0]))
    np.testing.assert_array_equal(p, np.array([1, 4, 5, 5]) / 5)


def test_p_values_are_valid_for_exchangeable_continuous_scores() -> None:
    """P(p <= alpha) <= alpha over many calibration draws, and about equal to it."""
    rng = np.random.default_rng(0)
    trials, n = 4000, 99
    calibration = np.sort(rng.normal(size=(trials, n)), axis=1)
    new = rng.normal(size=trials)
    p = np.array(
        [conformal.p_values(c, np.array([x]))[0] for c, x in zip(calibration, new, strict=True)]
    )
    for alpha in ALPHAS:
        low, high = stats.binom.interval(0.999, trials, alpha)
        assert low / trials <= np.mean(p <= alpha) <= high / trials


def test_compressed_length_is_deterministic_and_grows_with_complexity() -> None:
    rng = np.random.default_rng(1)
    blank = np.zeros((1, 784))
    noise = (rng.random((1, 784)) < 0.5).astype(np.float32)
    lengths = conformal.compressed_nats(np.concatenate([blank, noise, blank]))
    assert lengths[0] == lengths[2] < lengths[1]
    # Coin flips cannot be compressed: about a bit each, plus deflate's few bytes of overhead.
    assert 784 * np.log(2) < lengths[1] < 1.1 * 784 * np.log(2)


# -- the held-out split ------------------------------------------------------------------------
def dataset(valid_rows: int) -> Dataset:
    rows = np.arange(valid_rows * 3, dtype=np.float32).reshape(-1, 3)
    return Dataset("t", rows, rows, rows, "none")


def test_calibration_rows_leave_the_validation_split() -> None:
    source = dataset(100)
    data = hold_out_calibration(source, 0.3)
    assert len(data.calibration) == 30 and len(data.valid) == 70
    np.testing.assert_array_equal(data.calibration, source.valid[data.calibration_rows])
    seen = {tuple(row) for row in data.valid}
    assert not seen & {tuple(row) for row in data.calibration}
    assert data.split_sizes() == {"train": 100, "valid": 70, "test": 100, "calibration": 30}
    assert hold_out_calibration(source, 0.0) is source


@pytest.mark.parametrize("fraction", [0.001, 1.0])
def test_a_fraction_leaving_a_split_empty_is_refused(fraction: float) -> None:
    with pytest.raises(DataError, match="calibration fraction"):
        hold_out_calibration(dataset(100), fraction)


def test_export_stores_the_served_scores_of_the_held_out_rows(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    calibration = manifest.calibration
    assert calibration is not None and manifest.data.split_sizes["calibration"] == 100
    source = np.load(next(Path(manifest.data.location).glob("valid.npy")))
    rows = source[calibration.rows]
    log_lik = Engine.load(tiny_artifact).log_likelihood(rows).log_likelihood
    stored = calibration.scores["mixture"]
    np.testing.assert_allclose(stored["log_likelihood"], np.sort(log_lik), rtol=0, atol=1e-9)
    corrected = np.sort(log_lik + conformal.compressed_nats(rows))
    np.testing.assert_allclose(stored["complexity_corrected"], corrected, rtol=0, atol=1e-9)


# -- the promise on real data ------------------------------------------------------------------
def flagged_shares(artifact: Path, rows: np.ndarray) -> dict[float, float]:
    engine = Engine.load(artifact)
    log_lik = np.concatenate(
        [
            engine.log_likelihood(rows[i : i + 1000]).log_likelihood
            for i in range(0, len(rows), 1000)
        ]
    )
    p = conformal.p_values(engine.calibration["mixture", "log_likelihood"], log_lik)
    return {alpha: float(np.mean(p <= alpha)) for alpha in ALPHAS}


def assert_within_binomial(shares: dict[float, float], count: int) -> None:
    for alpha, share in shares.items():
        low, high = stats.binom.interval(0.999, count, alpha)
        assert low / count <= share <= high / count, (alpha, share)


def test_digits_test_rows_are_flagged_at_the_promised_rate(digits_artifact: Path) -> None:
    from model.data import load_dataset

    test = load_dataset("digits").test
    assert_within_binomial(flagged_shares(digits_artifact, test), len(test))


@pytest.fixture(scope="module")
def fashion_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small pool on binarized Fashion-MNIST: one epoch, seconds."""
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist not installed")
    from model.config import TrainConfig
    from model.export import export
    from model.train import Trainer

    config = TrainConfig(source="fashion-mnist", hidden_sizes=[64], num_masks=2, epochs=1)
    trained = Trainer(config, tmp_path_factory.mktemp("fashion-run"), progress=False).fit()
    out = tmp_path_factory.mktemp("artifacts") / "fashion"
    export(trained, out)
    return out


def test_fashion_mnist_test_rows_are_flagged_at_the_promised_rate(fashion_artifact: Path) -> None:
    from model.data import load_dataset

    test = load_dataset("fashion-mnist").test
    assert_within_binomial(flagged_shares(fashion_artifact, test), len(test))


def test_p_values_of_the_models_own_samples_are_uniform(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Rows drawn from the model are exchangeable with calibration rows drawn from it: the
    p-values are uniform (Kolmogorov-Smirnov), whatever the model learned."""
    engine = Engine.load(export_tiny(tmp_path_factory, "wide", 40))
    rng = np.random.default_rng(7)
    calibration = np.sort(engine.log_likelihood(engine.sample(3000, rng)).log_likelihood)
    new = engine.log_likelihood(engine.sample(3000, rng)).log_likelihood
    p = conformal.p_values(calibration, new)
    assert stats.kstest(p, "uniform").pvalue > 1e-3


# -- through HTTP ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sharp_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose training rows are always 0 in dimensions 2 and 9: a 1 there is all but
    impossible."""
    from model.export import export
    from tests.conftest import train_tiny

    data = write_splits(tmp_path_factory.mktemp("sharp-data"), 12)
    for split in ("train", "valid", "test"):
        rows = np.load(data / f"{split}.npy")
        rows[:, [2, 9]] = 0
        np.save(data / f"{split}.npy", rows)
    out = tmp_path_factory.mktemp("artifacts") / "sharp"
    export(train_tiny(tmp_path_factory.mktemp("sharp-run"), data, epochs=40), out)
    return out


@pytest.fixture(scope="module")
def client(sharp_artifact: Path) -> Iterator:
    with served(sharp_artifact, anomaly_alpha=0.2) as client:
        yield client


def test_explanations_name_the_planted_values(client, sharp_artifact: Path) -> None:
    rows = np.load(next(Path(read_manifest(sharp_artifact).data.location).glob("test.npy")))[:5]
    rows[:, [2, 9]] = 1
    answer = client.http.post(
        "/v1/log-likelihood", json={"inputs": rows.astype(int).tolist(), "explain": 2}
    ).json()
    for explained in answer["explanation"]:
        assert {item["index"] for item in explained} == {2, 9}
        assert all(item["value"] == 1 and item["surprise"] > 2 for item in explained)
        assert explained[0]["surprise"] >= explained[1]["surprise"]


def test_p_values_flag_rows_at_the_servers_alpha(client, sharp_artifact: Path) -> None:
    rows = np.load(next(Path(read_manifest(sharp_artifact).data.location).glob("test.npy")))[:6]
    planted = rows.copy()
    planted[:, [2, 9]] = 1
    inputs = np.concatenate([rows, planted]).astype(int).tolist()
    answer = client.http.post("/v1/log-likelihood", json={"inputs": inputs, "p_value": True})
    body = answer.json()
    assert answer.status_code == 200 and body["score"] == "log_likelihood"
    p = np.array(body["p_value"])
    np.testing.assert_allclose(body["anomaly_score"], -np.array(body["log_likelihood"]))
    assert body["alpha"] == 0.2 and body["anomalous"] == (p <= 0.2).tolist()
    # Planted rows score below every calibration row: the smallest p-value there is.
    calibration_rows = client.model()["calibration_rows"]
    np.testing.assert_allclose(p[6:], 1 / (calibration_rows + 1))
    assert (p[:6] > p[6:].max()).all()


def test_the_python_client_asks_and_reads_anomaly_answers(client) -> None:
    rows = np.array([[0, 1] * 6, [1] * 12])
    answer = client.log_likelihood(rows, anomaly=AnomalyOptions(alpha=0.3, explain=2))
    assert answer.p_value.shape == (2,) and answer.anomalous.dtype == bool
    np.testing.assert_array_equal(answer.anomalous, answer.p_value <= 0.3)
    np.testing.assert_allclose(answer.anomaly_score, -answer.log_likelihood)
    assert [len(row) for row in answer.explanation] == [2, 2]
    assert client.log_likelihood(rows).p_value is None


def test_the_request_alpha_and_the_corrected_score(client) -> None:
    inputs = [[0, 1] * 6, [1] * 12]
    body = client.http.post(
        "/v1/log-likelihood",
        json={"inputs": inputs, "alpha": 0.5, "score": "complexity_corrected"},
    ).json()
    lengths = conformal.compressed_nats(np.array(inputs))
    corrected = np.array(body["log_likelihood"]) + lengths
    np.testing.assert_allclose(body["anomaly_score"], -corrected)
    assert body["score"] == "complexity_corrected" and body["alpha"] == 0.5
    assert body["anomalous"] == [p <= 0.5 for p in body["p_value"]]


@pytest.mark.parametrize(
    "extra, loc",
    [
        ({"p_value": True, "inputs": [[None] + [0] * 11]}, ["body", "inputs", 0]),
        ({"explain": 2, "inputs": [[0] * 11 + [None]]}, ["body", "inputs", 0]),
        ({"explain": 13}, ["body", "explain"]),
        ({"alpha": 1.0}, ["body", "alpha"]),
        ({"score": "entropy"}, ["body", "score"]),
    ],
    ids=["p-of-a-marginal", "explain-a-marginal", "explain-past-D", "alpha-1", "unknown-score"],
)
def test_anomaly_options_the_model_cannot_honour_are_named(client, extra: dict, loc: list) -> None:
    answer = client.http.post("/v1/log-likelihood", json={"inputs": [[0] * 12], **extra})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == loc


def test_an_artifact_without_calibration_refuses_p_values(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    artifact = export_tiny(tmp_path_factory, "uncalibrated", 8, calibration_fraction=0.0)
    assert read_manifest(artifact).calibration is None
    with served(artifact) as client:
        assert client.model()["calibration_rows"] is None
        answer = client.http.post("/v1/log-likelihood", json={"inputs": [[0] * 8], "alpha": 0.1})
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "p_value"]
        assert "calibration" in answer.json()["detail"][0]["msg"]
        # Explanations need no calibration.
        answer = client.http.post("/v1/log-likelihood", json={"inputs": [[0] * 8], "explain": 1})
        assert answer.status_code == 200 and len(answer.json()["explanation"][0]) == 1


def test_the_product_is_ranked_against_its_own_calibration_scores(
    tmp_path_factory: pytest.TempPathFactory, tiny_trained
) -> None:
    from model.export import export

    artifact = tmp_path_factory.mktemp("artifacts") / "tiny-product"
    manifest, _ = export(tiny_trained, artifact, product=True)
    product_scores = np.array(manifest.calibration.scores["product"]["log_likelihood"])
    assert not np.array_equal(
        product_scores, manifest.calibration.scores["mixture"]["log_likelihood"]
    )
    rows = np.load(next(Path(manifest.data.location).glob("test.npy")))[:20].astype(int).tolist()
    with served(artifact) as client:
        body = {"inputs": rows, "p_value": True, "combination": "product"}
        answer = client.http.post("/v1/log-likelihood", json=body).json()
    expected = conformal.p_values(product_scores, np.array(answer["log_likelihood"]))
    np.testing.assert_array_equal(answer["p_value"], expected)


def test_a_different_compressor_is_named_at_load(
    tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(tiny_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["calibration"]["compressor"] = "raw deflate, zlib 0.9 level 9, 8 entries a byte"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="made_serve"):
        Engine.load(copy)
    assert "zlib 0.9" in caplog.text and conformal.COMPRESSOR in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="made_serve"):
        Engine.load(tiny_artifact)
    assert "compress" not in caplog.text
