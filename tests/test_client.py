"""The client: NaN goes out as null, arrays come back, errors carry status and detail."""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import AsyncMadeClient, MadeClient, MadeClientError, encode_rows
from service.settings import Settings
from service.transport.app import create_app
from tests.conftest import run_async, served


def test_encode_rows_sends_null_for_nan_and_keeps_other_values() -> None:
    rows = np.array([[0, 1, np.nan], [1, 0.5, 2]])
    assert encode_rows(rows) == [[0, 1, None], [1, 0.5, 2.0]]
    assert json.dumps(encode_rows(np.zeros((1, 2, 2)))) == "[[[0, 0], [0, 0]]]"


def recording_transport(seen: list[httpx.Request], answer: dict, status: int = 200):
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=answer)

    return httpx.MockTransport(handle)


def test_request_body_headers_and_parsed_answer() -> None:
    seen: list[httpx.Request] = []
    answer = {
        "log_likelihood": [-1.5, -2.0],
        "bits_per_dim": [0.5, 0.7],
        "method": ["exact", "importance"],
        "standard_error": [0.0, 0.1],
        "effective_sample_size": [None, 40.5],
        "seed": 9,
    }
    client = MadeClient(
        "http://made.test", transport=recording_transport(seen, answer), api_key="k3y"
    )
    result = client.log_likelihood(np.array([[1, 0], [np.nan, 1]]), num_particles=64, seed=9)
    (request,) = seen
    assert request.url == "http://made.test/v1/log-likelihood"
    assert request.headers["authorization"] == "Bearer k3y"
    assert json.loads(request.content) == {
        "inputs": [[1, 0], [None, 1]],
        "num_particles": 64,
        "seed": 9,
    }
    np.testing.assert_array_equal(result.log_likelihood, [-1.5, -2.0])
    assert result.method == ("exact", "importance") and result.seed == 9
    assert np.isnan(result.effective_sample_size[0]) and result.effective_sample_size[1] == 40.5
    assert result.per_member is None and result.per_dimension is None
    client.log_likelihood(np.array([[1, 0]]), combination="product")
    assert json.loads(seen[-1].content) == {"inputs": [[1, 0]], "combination": "product"}


def test_error_carries_status_and_detail() -> None:
    detail = [{"loc": ["body", "num_samples"], "msg": "too many", "type": "value_error"}]
    transport = recording_transport([], {"detail": detail}, status=422)
    with pytest.raises(MadeClientError) as caught:
        MadeClient("http://made.test", transport=transport).sample(10**6)
    assert caught.value.status == 422 and caught.value.detail == detail
    assert caught.value.loc == ("body", "num_samples")
    transport = recording_transport([], {"detail": "not ready"}, status=503)
    with pytest.raises(MadeClientError, match="503") as caught:
        MadeClient("http://made.test", transport=transport).model()
    assert caught.value.loc == ()


def test_sync_client_on_app(tiny_artifact: Path) -> None:
    with served(tiny_artifact) as client:
        assert client.ready()
        info = client.model()
        dim, k = info["dim"], info["num_members"]
        rows = np.array([[0] * dim, [1] * dim], dtype=np.float32)
        detail = client.log_likelihood(rows, per_member=True, per_dimension=True)
        assert detail.per_member.shape == (2, k) and detail.per_dimension.shape == (2, k, dim)
        # Each member's terms sum to its log-likelihood; the mixture is the weighted logsumexp.
        np.testing.assert_allclose(detail.per_dimension.sum(axis=2), detail.per_member, atol=1e-4)
        weights = np.log(np.array(info["mixture_weights"]))
        mixture = np.logaddexp.reduce(detail.per_member + weights, axis=1)
        np.testing.assert_allclose(detail.log_likelihood, mixture, atol=1e-6)
        completions = client.complete(np.array([[np.nan] * dim]), num_samples=3, seed=2)
        assert completions.completions.shape == (1, 3, dim) and completions.seed == 2
        assert completions.particles_capped == (False,) and completions.warning is None
        samples = client.sample(5, seed=1)
        assert samples.samples.shape == (5, dim) and samples.samples.dtype == np.uint8


def test_completions_carry_the_particle_cap_flag_and_warning(tiny_artifact: Path) -> None:
    row = np.full((1, 8), np.nan)
    row[0, [1, 4, 6]] = [1, 0, 1]  # a non-prefix observed set: the importance path
    with served(tiny_artifact, max_particles=16) as client:
        few = client.complete(row, num_samples=2, num_particles=16, seed=3)
        many = client.complete(row, num_samples=200, num_particles=16, seed=3)
    assert few.method == ("importance",) and few.particles_capped == (False,)
    assert few.warning is None
    assert many.particles_capped == (True,) and "16" in many.warning
    assert many.effective_sample_size[0] < 200


def test_async_client_matches_sync(tiny_artifact: Path) -> None:
    rows = np.array([[0, 1, 1, 0, 0, 1, 0, 1], [1, np.nan, 0, 1, np.nan, 0, 0, 1]])
    with served(tiny_artifact) as sync:
        expected = sync.log_likelihood(rows, seed=4)
        expected_samples = sync.sample(6, seed=4).samples

    async def ask() -> tuple:
        app = create_app(Settings(model_dir=tiny_artifact))
        async with app.router.lifespan_context(app):
            client = AsyncMadeClient("http://app", transport=httpx.ASGITransport(app=app))
            try:
                assert await client.ready()
                return (
                    await client.log_likelihood(rows, seed=4),
                    (await client.sample(6, seed=4)).samples,
                    (await client.complete(rows[1:], num_samples=2, seed=4)).completions,
                )
            finally:
                await client.aclose()

    answer, samples, completions = run_async(ask())
    np.testing.assert_array_equal(answer.log_likelihood, expected.log_likelihood)
    assert answer.method == expected.method
    np.testing.assert_array_equal(samples, expected_samples)
    observed = ~np.isnan(rows[1])
    assert completions.shape == (1, 2, 8)
    assert (completions[0][:, observed] == rows[1][observed]).all()


def test_api_key_is_sent(tiny_artifact: Path) -> None:
    with served(tiny_artifact, api_key="s3cret") as anonymous:
        with pytest.raises(MadeClientError) as caught:
            anonymous.sample(1)
        assert caught.value.status == 401
        keyed = MadeClient(client=anonymous.http, api_key="s3cret")
        assert keyed.sample(2, seed=0).samples.shape == (2, 8)
