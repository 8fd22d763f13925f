"""Access control: the optional API key on every route but the probes, admin always keyed, CORS."""

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.inference.engine import Engine
from service.settings import Settings
from service.transport.app import create_app

KEY = "s3cret-key"
# Probes stay open; so does the V2 protocol's health group (server metadata, live/ready probes).
PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/v2"}


@pytest.fixture(scope="module")
def engine(tiny_artifact: Path) -> Engine:
    return Engine.load(tiny_artifact)


def client_for(engine: Engine, tiny_artifact: Path, **settings: object) -> TestClient:
    app = create_app(Settings(model_dir=tiny_artifact, **settings), engine=engine)
    return TestClient(app)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/v2/health/") or path.endswith("/ready")


def test_without_a_key_v1_is_open_and_admin_is_forbidden(engine, tiny_artifact):
    with client_for(engine, tiny_artifact) as client:
        assert client.get("/v1/model").status_code == 200
        response = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 403
        assert "MADE_API_KEY" in response.json()["detail"]


def test_an_empty_key_counts_as_unset(engine, tiny_artifact):
    with client_for(engine, tiny_artifact, api_key="") as client:
        assert client.get("/v1/model").status_code == 200
        assert client.post("/v1/admin/reload").status_code == 403


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Bearer {KEY}x", f"Basic {KEY}", KEY, "Bearer", f"bearer  {KEY[:-1]}"],
)
def test_a_missing_or_wrong_key_gets_401(engine, tiny_artifact, header):
    headers = {"Authorization": header} if header is not None else {}
    with client_for(engine, tiny_artifact, api_key=KEY) as client:
        for method, path in (("GET", "/v1/model"), ("POST", "/v1/sample")):
            response = client.request(method, path, headers=headers, json={"num_samples": 1})
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert "API key" in response.json()["detail"]
        assert client.post("/v1/admin/reload", headers=headers).status_code == 401


def test_the_right_key_gets_the_engines_answer(engine, tiny_artifact):
    rows = (np.random.default_rng(3).random((3, engine.dim)) < 0.5).astype(np.float32)
    with client_for(engine, tiny_artifact, api_key=KEY) as client:
        response = client.post(
            "/v1/log-likelihood",
            json={"inputs": rows.astype(int).tolist()},
            headers={"Authorization": f"bearer {KEY}"},  # the scheme is case-insensitive
        )
    assert response.status_code == 200
    expected = engine.log_likelihood(rows).log_likelihood
    np.testing.assert_allclose(response.json()["log_likelihood"], expected, rtol=1e-6)


def test_every_route_but_the_probes_needs_the_key(engine, tiny_artifact):
    app = create_app(Settings(model_dir=tiny_artifact, api_key=KEY), engine=engine)
    paths = app.openapi()["paths"]
    assert any(path.startswith("/v1/admin") for path in paths)
    with TestClient(app) as client:
        for path, operations in paths.items():
            url = path.replace("{", "").replace("}", "")  # any value for path parameters
            for method in operations:
                status = client.request(method.upper(), url).status_code
                if is_public(path):
                    assert status != 401, (method, path)
                else:
                    assert status == 401, (method, path)


def test_probes_stay_open_with_a_key(engine, tiny_artifact):
    with client_for(engine, tiny_artifact, api_key=KEY) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def test_cors_is_off_by_default(engine, tiny_artifact):
    with client_for(engine, tiny_artifact) as client:
        response = client.options("/v1/sample", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in response.headers
        simple = client.get("/v1/model", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_only_configured_origins(engine, tiny_artifact):
    with client_for(engine, tiny_artifact, cors_origins=["https://app.example"]) as client:
        allowed = client.options("/v1/sample", headers=PREFLIGHT)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options(
            "/v1/sample", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_keyed_operations_document_the_key_and_its_401(engine, tiny_artifact):
    settings = Settings(model_dir=tiny_artifact, api_key=KEY)
    paths = create_app(settings, engine=engine).openapi()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            keyed = not is_public(path)
            assert ("401" in operation["responses"]) == keyed, (method, path)
            assert bool(operation.get("security")) == keyed, (method, path)
