"""Hot reload: a valid artifact beside the old one takes over atomically, a bad one is refused."""

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.export import export
from service.contract import artifact
from service.inference.engine import Engine
from service.settings import Settings
from service.transport.app import create_app
from tests.conftest import train_tiny

KEY = "reload-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_artifact: Path, tiny_data_dir: Path) -> Path:
    """A folder holding the served artifact, a different valid one and a corrupted one."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_artifact, root / "old")
    export(
        train_tiny(tmp_path_factory.mktemp("run"), tiny_data_dir, seed=5, epochs=3), root / "new"
    )
    shutil.copytree(tiny_artifact, root / "bad")
    onnx_path = root / "bad" / artifact.ONNX_FILE
    onnx_path.write_bytes(onnx_path.read_bytes()[:-100])
    return root


def serve(directory: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(model_dir=directory, api_key=KEY, **settings)))


@pytest.fixture
def client(artifacts: Path):
    with serve(artifacts / "old") as client:
        yield client


ROWS = (np.random.default_rng(11).random((4, 8)) < 0.5).astype(np.float32)


def served_log_likelihood(client: TestClient, batched: bool = True) -> np.ndarray:
    """Through the batcher, or (per_member) straight to the engine."""
    body = {"inputs": ROWS.astype(int).tolist(), "per_member": not batched}
    response = client.post("/v1/log-likelihood", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return np.array(response.json()["log_likelihood"])


def expected(directory: Path) -> np.ndarray:
    return Engine.load(directory).log_likelihood(ROWS).log_likelihood


def test_reload_switches_to_the_new_artifact(client, artifacts):
    np.testing.assert_allclose(
        served_log_likelihood(client), expected(artifacts / "old"), rtol=1e-6
    )
    response = client.post("/v1/admin/reload", json={"model_dir": "new"}, headers=AUTH)
    assert response.status_code == 200, response.text
    new_sha = artifact.read_manifest(artifacts / "new").onnx.sha256
    assert response.json()["artifact_sha256"] == new_sha
    assert client.get("/v1/model", headers=AUTH).json()["artifact_sha256"] == new_sha
    np.testing.assert_allclose(
        served_log_likelihood(client), expected(artifacts / "new"), rtol=1e-6
    )


def test_a_bad_artifact_leaves_the_old_one_serving(client, artifacts):
    response = client.post("/v1/admin/reload", json={"model_dir": "bad"}, headers=AUTH)
    assert response.status_code == 409
    assert "still serving the old model" in response.json()["detail"]
    assert "sha256" in response.json()["detail"]
    np.testing.assert_allclose(
        served_log_likelihood(client), expected(artifacts / "old"), rtol=1e-6
    )
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("model_dir", ["../old", "/etc", "old/../../old", "missing"])
def test_only_siblings_of_the_served_artifact_can_be_loaded(client, artifacts, model_dir):
    response = client.post("/v1/admin/reload", json={"model_dir": model_dir}, headers=AUTH)
    if model_dir == "missing":  # a sibling, but absent: refused like any bad artifact
        assert response.status_code == 409
        assert "does not exist" in response.json()["detail"]
    else:
        assert response.status_code == 422
        assert "beside" in str(response.json()["detail"])
    np.testing.assert_allclose(
        served_log_likelihood(client), expected(artifacts / "old"), rtol=1e-6
    )


def test_reload_needs_the_key(client):
    assert client.post("/v1/admin/reload", json={"model_dir": "new"}).status_code == 401


def test_requests_in_flight_finish_on_the_old_model(artifacts):
    """A request queued in the batcher before the switch is answered by the old model."""
    with serve(artifacts / "old", max_queue_delay_ms=60_000, request_timeout_s=120) as client:
        in_flight_then_reload(client, artifacts)


def in_flight_then_reload(client: TestClient, artifacts: Path) -> None:
    runtime = client.app.state.serving
    result: dict[str, np.ndarray] = {}
    worker = threading.Thread(target=lambda: result.update(old=served_log_likelihood(client)))
    worker.start()
    deadline = time.monotonic() + 30
    old_batcher = runtime.batchers[runtime.engine]
    while old_batcher.queued_rows == 0:  # poll until the rows wait in the old queue
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.005)
    response = client.post("/v1/admin/reload", json={"model_dir": "new"}, headers=AUTH)
    assert response.status_code == 200
    worker.join(timeout=30)
    np.testing.assert_allclose(result["old"], expected(artifacts / "old"), rtol=1e-6)
    # The new batcher keeps the long delay; the unbatched path shows the new model at once.
    now = served_log_likelihood(client, batched=False)
    np.testing.assert_allclose(now, expected(artifacts / "new"), rtol=1e-6)
