"""A mixed-schema model (a bernoulli, a categorical of 3, an ordinal of 5, a labelled categorical
of 4) trained, exported and served: small enough to enumerate its 120 rows, so normalisation,
sampling, marginals and completions are checked against exact probabilities, through the engine
and through HTTP."""

import itertools
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from schemathesis import GenerationMode
from tritonclient.utils import InferenceServerException

from service.contract.artifact import ArtifactError
from service.contract.mixture import product_log_unnormalised
from service.inference.engine import Engine
from tests.conftest import export_schema_model, served, write_schema_splits
from tests.fuzzing import fuzz_operation
from tests.servers import made_serve

LABELS = ["a", "b", "c", "d"]
SCHEMA = {
    "columns": [
        {"name": "flag", "family": "bernoulli"},
        {"name": "colour", "family": "categorical", "classes": 3},
        {"name": "size", "family": "ordinal", "levels": 5, "components": 2},
        {"name": "grade", "family": "categorical", "classes": 4, "labels": LABELS},
    ]
}
LEVELS = (2, 3, 5, 4)
MIXED_MODEL = "made-files-k4-h16-16"  # the manifest's name: a repository of one serves by it
ALL_ROWS = np.array(list(itertools.product(*(range(n) for n in LEVELS))), dtype=np.float32)


def mixed_rows(n: int, seed: int) -> np.ndarray:
    """Rows whose dimensions depend on each other, so the members have something to learn."""
    rng = np.random.default_rng(seed)
    flag = rng.random(n) < 0.3
    colour = (flag + rng.integers(0, 2, n)) % 3
    size = np.clip(colour * 2 + rng.integers(-1, 2, n), 0, 4)
    grade = (size + flag + (rng.random(n) < 0.2)) % 4
    return np.stack([flag, colour, size, grade], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def mixed_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_schema_splits(
        tmp_path_factory.mktemp("mixed-data"), mixed_rows, SCHEMA, sizes=(800, 200)
    )
    return export_schema_model(tmp_path_factory, "mixed", data, product=True, epochs=6)


@pytest.fixture(scope="module")
def engine(mixed_artifact: Path) -> Engine:
    return Engine.load(mixed_artifact)


def exact_mixture(engine: Engine) -> np.ndarray:
    """[120] p(x) of every row under the mixture."""
    return np.exp(engine.log_likelihood(ALL_ROWS).log_likelihood)


def test_manifest_is_version_2_with_the_schema(engine: Engine) -> None:
    manifest = engine.manifest
    assert manifest.schema_version == 2
    assert [d.family for d in manifest.dimensions] == [
        "bernoulli",
        "categorical",
        "ordinal",
        "categorical",
    ]
    assert manifest.dimensions[3].labels == LABELS


def test_members_mixture_and_product_normalise_over_every_row(engine: Engine) -> None:
    result = engine.log_likelihood(ALL_ROWS)
    np.testing.assert_allclose(np.exp(result.per_member).sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.exp(result.log_likelihood).sum(), 1.0, atol=1e-5)
    unnormalised = product_log_unnormalised(result.per_member, engine.weights)
    exact_log_z = np.log(np.exp(unnormalised).sum())
    normaliser = engine.manifest.product_normaliser
    assert abs(normaliser.log_z - exact_log_z) < 5 * normaliser.standard_error + 1e-3
    assert exact_log_z <= normaliser.upper_bound + 1e-3  # the bound holds (here, at least)


def test_per_dimension_terms_sum_to_the_members(engine: Engine) -> None:
    result = engine.log_likelihood(ALL_ROWS, per_dimension=True)
    np.testing.assert_allclose(result.per_dimension.sum(axis=2), result.per_member, atol=1e-4)


def test_http_log_likelihoods_normalise_and_match_the_engine(
    mixed_artifact: Path, engine: Engine
) -> None:
    with served(mixed_artifact) as client:
        mixture = client.log_likelihood(ALL_ROWS)
        product = client.log_likelihood(ALL_ROWS, combination="product")
    np.testing.assert_allclose(np.exp(mixture.log_likelihood).sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(mixture.log_likelihood, np.log(exact_mixture(engine)), atol=1e-6)
    # Normalised by the estimated log Z: sums to exp(exact log Z - estimate), about 1.
    assert abs(np.log(np.exp(product.log_likelihood).sum())) < 0.05
    assert np.allclose(mixture.bits_per_dim, -mixture.log_likelihood / (4 * np.log(2)))


def total_variation(samples: np.ndarray, probabilities: np.ndarray) -> float:
    index = np.ravel_multi_index(samples.astype(np.int64).T, LEVELS)
    frequencies = np.bincount(index, minlength=len(probabilities)) / len(samples)
    return 0.5 * float(np.abs(frequencies - probabilities).sum())


def test_samples_follow_the_exact_probabilities(mixed_artifact: Path, engine: Engine) -> None:
    exact = exact_mixture(engine)
    with served(mixed_artifact, max_samples=4096) as client:
        samples = np.concatenate(
            [client.sample(4096, seed=seed).samples for seed in range(5)]
        )  # 20,480 draws over 120 cells: the expected TV is about 0.03
    assert samples.dtype == np.uint8
    assert total_variation(samples, exact) < 0.05
    wrong = np.roll(exact, 7)  # a distribution it must not match
    assert total_variation(samples, wrong) > 0.1


@pytest.mark.parametrize(
    "observed",
    [(0,), (0, 1), (2,), (1, 3), (0, 2, 3)],
    ids=["first", "first-two", "middle", "two-apart", "all-but-one"],
)
def test_marginals_match_brute_force(engine: Engine, observed: tuple[int, ...]) -> None:
    exact = exact_mixture(engine)
    rng = np.random.default_rng(0)
    row = ALL_ROWS[rng.integers(len(ALL_ROWS))].copy()
    query = np.full((1, 4), np.nan, dtype=np.float32)
    query[0, list(observed)] = row[list(observed)]
    matches = (ALL_ROWS[:, list(observed)] == row[list(observed)]).all(axis=1)
    truth = np.log(exact[matches].sum())
    marginal = engine.marginal(query, 4096, np.random.default_rng(1))
    error = marginal.standard_error[0]
    assert abs(marginal.log_likelihood[0] - truth) < 5 * error + 1e-4


def test_completions_keep_observed_entries_and_follow_the_conditional(
    mixed_artifact: Path, engine: Engine
) -> None:
    exact = exact_mixture(engine)
    query = [[1, None, None, "c"]]  # a label stands for its class
    matches = (ALL_ROWS[:, 0] == 1) & (ALL_ROWS[:, 3] == 2)
    conditional = np.where(matches, exact, 0.0) / exact[matches].sum()
    with served(mixed_artifact, max_samples=1024, max_particles=65536) as client:
        draws = np.concatenate(
            [
                client.complete(query, num_samples=1024, seed=seed, num_particles=8192).completions[
                    0
                ]
                for seed in range(4)
            ]
        )
    assert (draws[:, 0] == 1).all() and (draws[:, 3] == 2).all()
    assert total_variation(draws, conditional) < 0.08


def test_labels_are_accepted_and_bad_values_get_422_naming_the_column(
    mixed_artifact: Path,
) -> None:
    with served(mixed_artifact) as client:
        http = client.http
        by_label = http.post("/v1/log-likelihood", json={"inputs": [[0, 1, 2, "b"]]}).json()
        by_index = http.post("/v1/log-likelihood", json={"inputs": [[0, 1, 2, 1]]}).json()
        assert by_label["log_likelihood"] == by_index["log_likelihood"]
        for row, field, words in [
            ([0, 1, 5, 1], [0, 2], ["dimension 2 ('size')", "ordinal", "0..4"]),
            ([0, 3, 2, 1], [0, 1], ["dimension 1 ('colour')", "0..2"]),
            ([0, 1, 2, "e"], [0, 3], ["dimension 3 ('grade')", "unknown label", "'e'"]),
            ([0, "b", 2, 1], [0, 1], ["colour", "has none"]),
            ([0, 1, 2.5, 1], [0, 2], ["size", "2.5"]),
            ([2, 1, 2, 1], [0, 0], ["dimension 0 ('flag')", "0..1"]),
        ]:
            response = http.post("/v1/log-likelihood", json={"inputs": [row]})
            assert response.status_code == 422, row
            detail = json.dumps(response.json())
            assert json.dumps(["inputs", *field])[1:-1] in detail, (row, detail)
            for word in words:
                assert word in detail, (row, word, detail)
        assert http.get("/healthz").status_code == 200  # and it keeps serving


def test_model_metadata_shows_the_schema(mixed_artifact: Path) -> None:
    with served(mixed_artifact) as client:
        info = client.http.get("/v1/model").json()
        metadata = client.http.get(f"/v2/models/{info['model']}").json()
    assert [d["family"] for d in info["dimensions"]] == [c["family"] for c in SCHEMA["columns"]]
    assert info["dimensions"][3]["labels"] == LABELS
    assert metadata["parameters"]["dimensions"][2] == SCHEMA["columns"][2]


def test_binary_models_answer_without_the_schema_fields(tiny_artifact: Path) -> None:
    with served(tiny_artifact) as client:
        info = client.http.get("/v1/model").json()
        metadata = client.http.get(f"/v2/models/{info['model']}").json()
    assert "dimensions" not in info and "parameters" not in metadata


@pytest.fixture(scope="module")
def triton_client(
    mixed_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[triton_http.InferenceServerClient]:
    """tritonclient on a made-serve process serving the mixed model."""
    with made_serve(mixed_artifact, tmp_path_factory.mktemp("mixed-serve") / "serve.log") as at:
        client = triton_http.InferenceServerClient(at, network_timeout=30.0)
        yield client
        client.close()


@pytest.mark.parametrize("datatype", ["INT32", "UINT8", "FP32", "FP64"])
def test_v2_infer_takes_integer_and_float_levels(
    triton_client: triton_http.InferenceServerClient, engine: Engine, datatype: str
) -> None:
    rows = ALL_ROWS[:16]
    dtype = triton_http.triton_to_np_dtype(datatype)
    name = MIXED_MODEL
    tensor = triton_http.InferInput("x", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(dtype), binary_data=datatype != "FP64")
    result = triton_client.infer(name, [tensor]).as_numpy("log_likelihood")
    np.testing.assert_allclose(result, engine.log_likelihood(rows).log_likelihood, atol=1e-6)
    bad = triton_http.InferInput("x", [1, 4], datatype)
    bad.set_data_from_numpy(np.array([[0, 1, 7, 1]], dtype=dtype))
    with pytest.raises(InferenceServerException, match=r"\[0, 2\].*'size'"):
        triton_client.infer(name, [bad])


@pytest.mark.parametrize("path", ["/v1/log-likelihood", "/v1/complete", "/v1/sample"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_served_document_states_what_a_schema_model_takes(
    mixed_artifact: Path, path: str, mode: GenerationMode
) -> None:
    """schemathesis from the mixed model's own OpenAPI document: every row valid under it (levels
    per dimension, labels) answered, every invalid one refused, none a 5xx."""
    fuzz_operation(mixed_artifact, path, mode)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("dimensions"), "schema_version 2 needs dimensions"),
        (lambda m: m.update(schema_version=1), "only schema_version 2 has dimensions"),
        (lambda m: m["dimensions"].pop(), "dimensions has 3 entries for D=4"),
        (lambda m: m["dimensions"][3].update(labels=["a", "b"]), "2 labels for 4 classes"),
        (lambda m: m["dimensions"][2].update(family="gaussian"), "dimensions.2"),
    ],
)
def test_inconsistent_schema_manifests_are_refused_naming_the_field(
    mixed_artifact: Path, tmp_path: Path, edit, message: str
) -> None:
    copy = tmp_path / "artifact"
    shutil.copytree(mixed_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=re.escape(message)):
        Engine.load(copy)


def test_made_data_pack_refuses_levels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from model.cli import data_main

    assert data_main(["pack", "--source", "digits-levels", "--out", str(tmp_path / "p")]) == 2
    assert "holds levels" in capsys.readouterr().err


def test_samples_and_completions_come_with_labels_when_asked(mixed_artifact: Path) -> None:
    with served(mixed_artifact) as client:
        http = client.http
        plain = http.post("/v1/sample", json={"num_samples": 16, "seed": 3}).json()["samples"]
        named = http.post("/v1/sample", json={"num_samples": 16, "seed": 3, "labels": True})
        assert named.status_code == 200
        for levels, labelled in zip(plain, named.json()["samples"], strict=True):
            assert labelled[:3] == levels[:3] and labelled[3] == LABELS[levels[3]]
        body = {"inputs": [[1, None, 2, "d"]], "num_samples": 4, "seed": 1, "labels": True}
        completions = http.post("/v1/complete", json=body).json()["completions"][0]
        assert all(row[3] == "d" and row[0] == 1 and row[2] == 2 for row in completions)
        # The Python client: levels by default, labels when asked.
        levels = client.sample(16, seed=3)
        assert levels.samples.dtype == np.uint8 and levels.samples.tolist() == plain
        labelled = client.sample(16, seed=3, labels=True).samples
        assert labelled.dtype == object and labelled.tolist() == named.json()["samples"]
        done = client.complete([[1, None, 2, "d"]], num_samples=4, seed=1, labels=True)
        assert done.completions.tolist() == [completions]


def test_labels_on_a_model_without_any_are_refused_naming_the_field(tiny_artifact: Path) -> None:
    with served(tiny_artifact) as client:
        response = client.http.post("/v1/sample", json={"num_samples": 2, "labels": True})
    assert response.status_code == 422
    assert "no labelled dimensions" in response.text and '"labels"' in response.text
