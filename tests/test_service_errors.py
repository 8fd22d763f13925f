"""A client's mistake gets a 4xx naming the field, and the next good request is answered right."""

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.client import MadeClient, MadeClientError
from tests.conftest import served, strict_json

LIMITS = dict(max_rows=16, max_body_bytes=4096, max_samples=64, max_particles=512)
ROW = [0, 1, 1, 0, 0, 1, 0, 1]
GOOD = np.array([ROW, [1] * 8, [0] * 8], dtype=np.float32)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(tiny_artifact: Path) -> Iterator[MadeClient]:
    with served(tiny_artifact, **LIMITS) as client:
        yield client


@pytest.fixture(scope="module")
def reference(client: MadeClient) -> np.ndarray:
    return client.log_likelihood(GOOD).log_likelihood


def with_row(row: list) -> dict:
    return {"inputs": [row]}


# (endpoint, JSON body, expected loc after "body"); every case is a 422.
INVALID = [
    ("log-likelihood", with_row(ROW[:7]), ["inputs", 0]),
    ("log-likelihood", with_row([*ROW, 0]), ["inputs", 0]),
    ("log-likelihood", with_row([2, *ROW[1:]]), ["inputs", 0, 0]),
    ("log-likelihood", with_row([*ROW[:3], 0.5, *ROW[4:]]), ["inputs", 0, 3]),
    ("log-likelihood", with_row([*ROW[:5], -1, *ROW[6:]]), ["inputs", 0, 5]),
    ("log-likelihood", with_row([*ROW[:2], "1", *ROW[3:]]), ["inputs", 0, 2]),
    ("log-likelihood", with_row([*ROW[:6], True, ROW[7]]), ["inputs", 0, 6]),
    ("log-likelihood", {"inputs": [ROW], "per_member": True, "x": [True]}, ["x"]),
    ("log-likelihood", {"inputs": [ROW, [None, *ROW[1:]]], "per_member": True}, ["inputs", 1]),
    ("log-likelihood", {"inputs": [[None, *ROW[1:]]], "per_dimension": True}, ["inputs", 0]),
    ("log-likelihood", {"inputs": []}, ["inputs"]),
    ("log-likelihood", {"inputs": [ROW] * 17}, ["inputs"]),
    ("log-likelihood", {}, ["inputs"]),
    ("log-likelihood", {"inputs": "0110"}, ["inputs"]),
    ("log-likelihood", {"inputs": [5]}, ["inputs", 0]),
    ("log-likelihood", {"inputs": [[ROW[:4], ROW[4:]]]}, ["inputs", 0]),
    ("log-likelihood", {"inputs": [ROW], "per_member": "yes"}, ["per_member"]),
    ("log-likelihood", {"inputs": [ROW], "per_dimension": 1}, ["per_dimension"]),
    ("log-likelihood", {"inputs": [[None] * 8], "num_particles": 1}, ["num_particles"]),
    ("log-likelihood", {"inputs": [[None] * 8], "num_particles": 513}, ["num_particles"]),
    ("log-likelihood", {"inputs": [ROW], "num_particles": 513}, ["num_particles"]),
    ("log-likelihood", {"inputs": [ROW], "num_particles": "many"}, ["num_particles"]),
    ("log-likelihood", {"inputs": [ROW], "seed": -1}, ["seed"]),
    ("log-likelihood", {"inputs": [ROW], "seed": 1.5}, ["seed"]),
    ("log-likelihood", {"inputs": [ROW], "batch": 1}, ["batch"]),
    ("complete", {"inputs": [[None] * 8], "num_samples": 0}, ["num_samples"]),
    ("complete", {"inputs": [[None] * 8], "num_samples": 65}, ["num_samples"]),
    ("complete", {"inputs": [[None] * 8] * 2, "num_samples": 33}, ["num_samples"]),
    ("complete", {"inputs": [[None] * 8], "num_particles": 1}, ["num_particles"]),
    ("complete", {"inputs": [[None] * 8], "num_particles": 10**6}, ["num_particles"]),
    ("complete", {"inputs": [[None, 2, *ROW[2:]]]}, ["inputs", 0, 1]),
    ("complete", {"inputs": [[None] * 8], "format": "gif"}, ["format"]),
    ("complete", {"inputs": [[None] * 8], "format": "png"}, ["format"]),
    ("complete", {"inputs": [[None] * 8], "num_samples": 2.5}, ["num_samples"]),
    ("sample", {"num_samples": 0}, ["num_samples"]),
    ("sample", {"num_samples": -3}, ["num_samples"]),
    ("sample", {"num_samples": 65}, ["num_samples"]),
    ("sample", {"num_samples": "4"}, ["num_samples"]),
    ("sample", {"num_samples": 4, "seed": "4"}, ["seed"]),
    ("sample", {"num_samples": 4, "inputs": [ROW]}, ["inputs"]),
    ("sample", {"num_samples": 4, "format": "png"}, ["format"]),
]


def assert_still_right(client: MadeClient, reference: np.ndarray) -> None:
    np.testing.assert_array_equal(client.log_likelihood(GOOD).log_likelihood, reference)


@pytest.mark.parametrize(("endpoint", "body", "loc"), INVALID)
def test_invalid_field_is_named(
    client: MadeClient, reference: np.ndarray, endpoint: str, body: dict, loc: list
) -> None:
    response = client.http.post(f"/v1/{endpoint}", json=body)
    assert response.status_code == 422, response.text
    (error,) = strict_json(response.text)["detail"]
    assert error["loc"] == ["body", *loc] and error["msg"], error
    assert_still_right(client, reference)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"inputs": [[0, 1', "application/json", 400),
        (b"", "application/json", 400),
        (b"inputs=0110", "application/x-www-form-urlencoded", 415),
        (json.dumps(with_row(ROW)).encode(), "text/plain", 415),
        (json.dumps({"inputs": [ROW] * 300}).encode(), "application/json", 413),
    ],
)
def test_unreadable_body(
    client: MadeClient, reference: np.ndarray, content: bytes, content_type: str, status: int
) -> None:
    response = client.http.post(
        "/v1/log-likelihood", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status, response.text
    assert isinstance(strict_json(response.text)["detail"], str)
    assert_still_right(client, reference)


def test_streamed_body_over_limit(client: MadeClient, reference: np.ndarray) -> None:
    """Without a Content-Length the limit still holds, counted while reading."""
    chunks = (b" " * 1024 for _ in range(8))
    response = client.http.post(
        "/v1/log-likelihood", content=chunks, headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert_still_right(client, reference)


def test_body_must_be_an_object(client: MadeClient, reference: np.ndarray) -> None:
    response = client.http.post("/v1/sample", json=[1, 2])
    assert response.status_code == 422
    assert strict_json(response.text)["detail"][0]["loc"] == ["body"]
    assert_still_right(client, reference)


def test_client_raises_with_status_and_detail(client: MadeClient, reference: np.ndarray) -> None:
    with pytest.raises(MadeClientError) as caught:
        client.log_likelihood(np.full((1, 7), 1.0))
    assert caught.value.status == 422 and caught.value.loc == ("body", "inputs", 0)
    with pytest.raises(MadeClientError) as caught:
        client.log_likelihood(np.array([[0.5, *ROW[1:]]]))  # sent as is, refused by the server
    assert caught.value.loc == ("body", "inputs", 0, 0)
    assert_still_right(client, reference)


@pytest.fixture(scope="module")
def digits(digits_artifact: Path) -> Iterator[MadeClient]:
    with served(digits_artifact) as client:
        yield client


def test_image_rows_equal_flat_rows(digits: MadeClient) -> None:
    images = (np.random.default_rng(0).random((5, 8, 8)) < 0.4).astype(np.float32)
    shaped = digits.log_likelihood(images).log_likelihood
    flat = digits.log_likelihood(images.reshape(5, 64)).log_likelihood
    np.testing.assert_array_equal(shaped, flat)
    marginal = images.copy()
    marginal[:, 4:] = np.nan
    np.testing.assert_array_equal(
        digits.log_likelihood(marginal, seed=3).log_likelihood,
        digits.log_likelihood(marginal.reshape(5, 64), seed=3).log_likelihood,
    )


def test_image_errors_name_pixel(digits: MadeClient) -> None:
    image = np.zeros((8, 8), dtype=int).tolist()
    image[2][5] = 7
    response = digits.http.post("/v1/log-likelihood", json={"inputs": [image]})
    assert response.status_code == 422
    assert strict_json(response.text)["detail"][0]["loc"] == ["body", "inputs", 0, 2, 5]
    response = digits.http.post("/v1/log-likelihood", json={"inputs": [image[:7]]})
    assert strict_json(response.text)["detail"][0]["loc"] == ["body", "inputs", 0]


def decoded_png(content: bytes) -> np.ndarray:
    assert content[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(content)) as picture:
        picture.load()
        return np.asarray(picture)


def test_png_answers(digits: MadeClient) -> None:
    grid = decoded_png(digits.sample_png(9, seed=1))
    assert grid.ndim == 2 and set(np.unique(grid)) <= {0, 96, 255}
    assert (grid == 255).any()  # some pixels are on
    row = np.full((1, 64), np.nan)
    row[0, :32] = 1
    completions = decoded_png(digits.complete_png(row, num_samples=4, seed=1))
    assert completions.shape[1] > completions.shape[0]  # one input: a grid row of 4 images
    via_accept = digits.http.post(
        "/v1/sample", json={"num_samples": 9, "seed": 1}, headers={"Accept": "image/png"}
    )
    assert via_accept.headers["content-type"] == "image/png"
    assert np.array_equal(decoded_png(via_accept.content), grid)
