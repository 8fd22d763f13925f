"""A tabular model (real-valued columns beside a labelled categorical, a bernoulli and an ordinal,
every column named) trained, exported and served: rows in as arrays or objects keyed by column
name, densities without bits per dimension, samples and completions out as objects with floats,
estimated probabilities of missing categoricals, V2 float tensors, and the Python client's
DataFrames."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from schemathesis import GenerationMode

from service.client import MadeClient
from service.settings import Settings
from service.transport.app import create_app
from tests.conftest import export_schema_model, served, write_schema_splits
from tests.fuzzing import fuzz_operation

JOBS = ["admin", "blue-collar", "technician"]
SCHEMA = {
    "columns": [
        {"name": "age", "family": "gaussian_mixture", "components": 2, "mean": 40.0, "scale": 12.0},
        {"name": "job", "family": "categorical", "classes": 3, "labels": JOBS},
        {"name": "flag", "family": "bernoulli"},
        {"name": "size", "family": "ordinal", "levels": 5, "components": 2},
        {
            "name": "income",
            "family": "gaussian_mixture",
            "components": 2,
            "mean": 3.0,
            "scale": 1.5,
        },
    ]
}
NAMES = [column["name"] for column in SCHEMA["columns"]]
ROW = {"age": 37.5, "job": "admin", "flag": 1, "size": 2, "income": 2.1}
ARRAY = [37.5, "admin", 1, 2, 2.1]


def table_rows(n: int, seed: int) -> np.ndarray:
    """Columns that depend on each other: age and income on the job, the flag on the job."""
    rng = np.random.default_rng(seed)
    job = rng.integers(0, 3, n)
    age = 30 + 10 * job + rng.normal(0, 5, n)
    flag = rng.random(n) < 0.2 + 0.2 * job
    size = np.clip(job + rng.integers(0, 3, n), 0, 4)
    income = 1.5 + 0.05 * (age - 30) + 0.5 * flag + rng.normal(0, 0.5, n)
    return np.stack([age, job, flag, size, income], axis=1).astype(np.float32)


def export_table_model(factory: pytest.TempPathFactory, name: str) -> Path:
    """The tabular model of these tests, trained on ``table_rows`` and exported as ``name``."""
    data = write_schema_splits(factory.mktemp(f"{name}-data"), table_rows, SCHEMA)
    return export_schema_model(factory, name, data, epochs=4)


@pytest.fixture(scope="module")
def table_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_table_model(tmp_path_factory, "table")


@pytest.fixture(scope="module")
def client(table_artifact: Path):
    with served(table_artifact, max_samples=512, max_particles=4096) as made:
        yield made


def post(client: MadeClient, path: str, body: dict) -> dict:
    response = client.http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_objects_and_arrays_give_the_same_answers(client: MadeClient) -> None:
    missing = {**ROW, "job": None, "income": None}
    for inputs in (
        [ROW, missing],
        [ARRAY, [37.5, None, 1, 2, None]],
        [ROW, [37.5, None, 1, 2, None]],
    ):
        body = post(client, "/v1/log-likelihood", {"inputs": inputs, "seed": 3})
        reference = post(
            client, "/v1/log-likelihood", {"inputs": [ARRAY, [37.5, None, 1, 2, None]], "seed": 3}
        )
        assert body == reference
    # Integers are numbers too; a whole float and an int are one value.
    as_int = post(client, "/v1/log-likelihood", {"inputs": [{**ROW, "age": 38}]})
    as_float = post(client, "/v1/log-likelihood", {"inputs": [{**ROW, "age": 38.0}]})
    assert as_int == as_float


def test_densities_have_no_bits_per_dim(client: MadeClient) -> None:
    body = post(client, "/v1/log-likelihood", {"inputs": [ROW]})
    assert "bits_per_dim" not in body and np.isfinite(body["log_likelihood"][0])
    plain = client.http.post("/v1/log-likelihood", json={"inputs": [[0, 1, 0, 1, 0]]}).json()
    assert "bits_per_dim" not in plain  # the 0/1 hot route answers alike
    # Densities move with the units: scaling a column by s shifts log p by -log s, so the
    # answer is not a probability (a quick check that it is a density: it can exceed 0).
    assert client.log_likelihood([ARRAY]).bits_per_dim is None
    # Nor does the model's card: its test NLL is a density's too.
    info = client.http.get("/v1/model").json()
    assert info["test_bits_per_dim"] is None and np.isfinite(info["test_nll"])


@pytest.mark.parametrize(
    ("row", "loc", "words"),
    [
        (
            {**ROW, "income": "abc"},
            "income",
            ["dimension 4 ('income') (gaussian_mixture)", "'abc'"],
        ),
        ([37.5, "admin", 1, 2, "abc"], 4, ["'income'", "takes a number, got 'abc'"]),
        ({**ROW, "income": True}, "income", ["'income'", "takes a number"]),
        ({**ROW, "age": 1e300}, "age", ["'age'", "finite number", "1e+300"]),
        ({**ROW, "nope": 1}, "nope", ["unknown column 'nope'", "'age'"]),
        ({k: v for k, v in ROW.items() if k != "size"}, "size", ["column 'size'", "absent"]),
        ({**ROW, "job": "chef"}, "job", ["'job'", "unknown label", "'chef'"]),
        ({**ROW, "size": 7}, "size", ["'size'", "0..4"]),
    ],
)
def test_bad_entries_get_422_naming_the_column(
    client: MadeClient, row: object, loc: object, words: list[str]
) -> None:
    for path in ("/v1/log-likelihood", "/v1/complete"):
        response = client.http.post(path, json={"inputs": [row]})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "inputs", 0, loc]
        for word in words:
            assert word in detail["msg"], (word, detail)


def test_non_finite_numbers_are_refused(client: MadeClient) -> None:
    """JSON has no infinity: 1e999 is not valid JSON to the decoder, so 400, not an answer."""
    raw = json.dumps({"inputs": [ARRAY]}).replace("37.5", "1e999")
    response = client.http.post(
        "/v1/log-likelihood", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "infinity" in response.text


def test_objects_for_a_model_without_names_are_refused(tiny_artifact: Path) -> None:
    with served(tiny_artifact) as made:
        response = made.http.post("/v1/log-likelihood", json={"inputs": [{"a": 0}]})
    assert response.status_code == 422
    assert "no column names" in response.text


def test_samples_come_back_as_objects_with_floats(client: MadeClient) -> None:
    samples = post(client, "/v1/sample", {"num_samples": 64, "seed": 1})["samples"]
    assert all(list(sample) == NAMES for sample in samples)
    assert all(isinstance(s["age"], float) and isinstance(s["income"], float) for s in samples)
    assert {s["job"] for s in samples} <= set(JOBS)
    assert all(s["flag"] in (0, 1) and s["size"] in range(5) for s in samples)
    assert len({s["age"] for s in samples}) > 32  # real values, not truncated to levels
    labelled = post(client, "/v1/sample", {"num_samples": 64, "seed": 1, "labels": True})
    assert labelled["samples"] == samples


def test_completions_keep_observed_values_and_give_category_probabilities(
    client: MadeClient,
) -> None:
    rows = [{**ROW, "job": None, "income": None}, ROW, [51.25, None, 0, 4, 3.3]]
    body = post(client, "/v1/complete", {"inputs": rows, "num_samples": 64, "seed": 2})
    first, second, third = body["completions"]
    assert all(c["age"] == 37.5 and c["flag"] == 1 and c["size"] == 2 for c in first)
    assert all(isinstance(c["income"], float) and c["job"] in JOBS for c in first)
    assert all(c == ROW for c in second)  # nothing missing: the row itself, 2.1 exactly
    assert all(c["income"] == 3.3 and c["age"] == 51.25 for c in third)
    probabilities = body["probabilities"]
    assert probabilities[1] == {}
    for estimate in (probabilities[0]["job"], probabilities[2]["job"]):
        assert list(estimate) == JOBS
        assert sum(estimate.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(0 <= p <= 1 for p in estimate.values())
    # The estimate agrees with the completions' own class frequencies (64 draws).
    frequencies = [sum(c["job"] == job for c in first) / 64 for job in JOBS]
    assert np.abs(np.subtract(frequencies, list(probabilities[0]["job"].values()))).max() < 0.25


def test_complexity_corrected_is_refused_for_real_columns(client: MadeClient) -> None:
    response = client.http.post(
        "/v1/log-likelihood", json={"inputs": [ROW], "score": "complexity_corrected"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "score"]
    assert "discrete data only" in response.text


def test_png_stays_refused(client: MadeClient) -> None:
    response = client.http.post("/v1/sample", json={"num_samples": 1, "format": "png"})
    assert response.status_code == 422 and "image" in response.text


def test_model_metadata_shows_means_and_scales(client: MadeClient) -> None:
    info = client.model()
    assert info["dimensions"][4] == SCHEMA["columns"][4]
    metadata = client.http.get(f"/v2/models/{info['model']}").json()
    assert metadata["parameters"]["dimensions"][0] == SCHEMA["columns"][0]


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64"])
def test_v2_float_tensors_equal_v1(client: MadeClient, datatype: str) -> None:
    rows = [[37.5, 0, 1, 2, 2.25], [51.0, 2, 0, 4, 3.5]]
    if datatype == "INT64":
        rows = [[37, 0, 1, 2, 2], [51, 2, 0, 4, 3]]
    name = client.model()["model"]
    tensor = {"name": "x", "shape": [2, 5], "datatype": datatype, "data": rows}
    v2 = post(client, f"/v2/models/{name}/infer", {"inputs": [tensor]})
    v1 = post(client, "/v1/log-likelihood", {"inputs": rows})
    np.testing.assert_allclose(v2["outputs"][0]["data"], v1["log_likelihood"], rtol=1e-12)


def test_v2_refuses_non_finite_values_naming_the_column(client: MadeClient) -> None:
    name = client.model()["model"]
    values = np.array([[37.5, 0, 1, 2, np.inf]], dtype="<f4")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 5],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ]
        }
    ).encode()
    response = client.http.post(
        f"/v2/models/{name}/infer",
        content=header + values.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "[0, 4]" in response.text and "'income'" in response.text and "finite" in response.text


def test_the_client_takes_and_gives_data_frames(client: MadeClient) -> None:
    frame = pd.DataFrame([ROW, {**ROW, "job": None, "income": np.nan}], columns=NAMES)
    by_frame = client.log_likelihood(frame, seed=5)
    by_rows = client.log_likelihood([ARRAY, [37.5, None, 1, 2, None]], seed=5)
    np.testing.assert_array_equal(by_frame.log_likelihood, by_rows.log_likelihood)
    # Columns are matched by name, not position.
    shuffled = client.log_likelihood(frame[NAMES[::-1]], seed=5)
    np.testing.assert_array_equal(shuffled.log_likelihood, by_rows.log_likelihood)
    samples = client.sample(16, seed=4, as_frame=True).samples
    assert isinstance(samples, pd.DataFrame) and list(samples.columns) == NAMES
    assert samples["age"].dtype == np.float64 and set(samples["job"]) <= set(JOBS)
    completed = client.complete(frame, num_samples=4, seed=6)
    done = completed.completions
    assert isinstance(done, pd.DataFrame) and len(done) == 8
    assert list(done.index.names) == ["row", "sample"]
    assert (done.loc[0] == pd.Series(ROW)).all(axis=None)
    assert done.loc[1]["job"].isin(JOBS).all() and done.loc[1]["income"].notna().all()
    assert set(completed.probabilities[1]["job"]) == set(JOBS)
    # The frames go back in: a sample's log-likelihood is finite.
    assert np.isfinite(client.log_likelihood(samples).log_likelihood).all()


def test_the_served_document_states_tabular_rows(table_artifact: Path) -> None:
    settings = Settings(model_dir=table_artifact, max_rows=8)
    with TestClient(create_app(settings)) as http:
        document = http.get("/openapi.json").json()
    body = document["paths"]["/v1/log-likelihood"]["post"]["requestBody"]["content"]
    complete_rows = body["application/json"]["schema"]["anyOf"][0]
    array, record = complete_rows["properties"]["inputs"]["items"]["anyOf"]
    assert array["prefixItems"][0]["type"] == "number"
    assert record["required"] == NAMES and record["properties"]["income"]["type"] == "number"
    assert complete_rows["properties"]["score"]["anyOf"][0]["enum"] == ["log_likelihood"]


@pytest.mark.parametrize("path", ["/v1/log-likelihood", "/v1/complete", "/v1/sample"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_nothing_on_a_tabular_model(
    table_artifact: Path, path: str, mode: GenerationMode
) -> None:
    """Rows valid under the tabular model's own document (arrays or objects, numbers within
    range) answered, invalid ones refused, none a 5xx, answers as documented."""
    fuzz_operation(table_artifact, path, mode)
