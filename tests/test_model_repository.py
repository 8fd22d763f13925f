"""Many models in one server: a repository of three tiny models (D = 4, 5 and 3; ``beta`` in two
versions), each route of each answering its own model, load / unload / index through HTTP and
through tritonclient, a broken version refused, LRU eviction, and reloads under traffic."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import product
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from scipy.special import logsumexp

from service.client import MadeClient
from service.contract.artifact import ArtifactError
from service.inference.engine import Engine
from service.inference.models import prepare_startup
from service.settings import Settings
from service.transport.app import create_app
from tests.conftest import export_tiny
from tests.servers import free_port, stop, wait_ready

KEY = "repository-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MADE_SERVE = Path(sys.executable).with_name("made-serve")
DIMS = {"alpha": 4, "beta": 5, "gamma": 3}
# (name, version in the path or None) -> the artifact folder that must answer it.
ROUTES = [("alpha", None), ("beta", None), ("beta", "1"), ("beta", "2"), ("gamma", None)]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Five tiny artifacts: alpha, beta's versions 1 and 2, gamma, and a spare beta 3."""
    factory = tmp_path_factory
    return {
        "alpha": export_tiny(factory, "alpha", DIMS["alpha"], epochs=3),
        "beta/1": export_tiny(factory, "beta-1", DIMS["beta"], epochs=3),
        "beta/2": export_tiny(factory, "beta-2", DIMS["beta"], epochs=3, seed=1),
        "beta/3": export_tiny(factory, "beta-3", DIMS["beta"], epochs=3, seed=2),
        "gamma": export_tiny(factory, "gamma", DIMS["gamma"], epochs=3),
    }


def make_repository(root: Path, artifacts: dict[str, Path]) -> Path:
    """alpha/ and gamma/ hold one artifact each, beta/ the numbered versions 1/ and 2/."""
    for where in ("alpha", "beta/1", "beta/2", "gamma"):
        shutil.copytree(artifacts[where], root / where)
    return root


@pytest.fixture
def repository(tmp_path: Path, artifacts: dict[str, Path]) -> Path:
    return make_repository(tmp_path / "models", artifacts)


def folder_of(name: str, version: str | None) -> str:
    return f"beta/{version or '2'}" if name == "beta" else name


def prefix(name: str, version: str | None) -> str:
    return f"/v1/models/{name}" + (f"/versions/{version}" if version else "")


def every_row(dim: int) -> list[list[int]]:
    return [list(bits) for bits in product((0, 1), repeat=dim)]


def offline(artifact: Path, rows: list[list[int]]) -> np.ndarray:
    engine = Engine.load(artifact)
    return engine.mixture(engine.member_log_probs(np.asarray(rows, dtype=np.float32)))


@pytest.fixture
def served(repository: Path) -> Iterator[TestClient]:
    settings = Settings(model_repository=repository, api_key=KEY)
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


def test_every_route_of_every_model_answers_its_own_normalised_model(
    served: TestClient, artifacts: dict[str, Path]
) -> None:
    for name, version in ROUTES:
        dim, where = DIMS[name], prefix(name, version)
        rows = every_row(dim)
        answer = served.post(f"{where}/log-likelihood", json={"inputs": rows})
        assert answer.status_code == 200, answer.text
        log_likelihood = np.array(answer.json()["log_likelihood"])
        assert abs(logsumexp(log_likelihood)) < 1e-5, (name, version)  # sums to 1 over 2^D rows
        expected = offline(artifacts[folder_of(name, version)], rows)
        np.testing.assert_allclose(log_likelihood, expected, rtol=1e-6)
        info = served.get(where).json()
        assert (info["model"], info["dim"]) == (name, dim)
        if version is not None:
            assert info["version"] == version
        samples = served.post(f"{where}/sample", json={"num_samples": 5, "seed": 0}).json()
        assert np.asarray(samples["samples"]).shape == (5, dim)
        hole = [[1] + [None] * (dim - 1)]
        completed = served.post(f"{where}/complete", json={"inputs": hole, "num_samples": 3})
        drawn = np.asarray(completed.json()["completions"])
        assert drawn.shape == (1, 3, dim) and (drawn[..., 0] == 1).all()
    # beta's two versions are different models, and the unversioned route is the latest one.
    rows = every_row(DIMS["beta"])
    one, two, latest = (
        served.post(f"{prefix('beta', v)}/log-likelihood", json={"inputs": rows}).json()
        for v in ("1", "2", None)
    )
    assert one != two and two == latest


def test_the_plain_routes_need_a_default_model(repository: Path) -> None:
    with TestClient(create_app(Settings(model_repository=repository))) as client:
        refused = client.post("/v1/log-likelihood", json={"inputs": [[0] * 3]})
        assert refused.status_code == 404
        assert "MADE_DEFAULT_MODEL" in refused.json()["detail"]
        listed = client.get("/v1/models").json()["models"]
        assert [m["name"] for m in listed] == ["alpha", "beta", "gamma"]
        assert not any(m["default"] for m in listed)
    settings = Settings(model_repository=repository, default_model="gamma")
    with TestClient(create_app(settings)) as client:
        plain = client.post("/v1/log-likelihood", json={"inputs": every_row(3)}).json()
        named = client.post("/v1/models/gamma/log-likelihood", json={"inputs": every_row(3)})
        assert plain == named.json()
        assert client.get("/v1/model").json()["model"] == "gamma"


def test_unknown_models_and_versions_get_404_naming_what_there_is(served: TestClient) -> None:
    for path in ("/v1/models/delta/log-likelihood", "/v1/models/beta/versions/9/log-likelihood"):
        answer = served.post(path, json={"inputs": [[0] * 5]})
        assert answer.status_code == 404, answer.text
    assert "'alpha', 'beta', 'gamma'" in served.get("/v1/models/delta").json()["detail"]
    assert "'1', '2'" in served.get("/v1/models/beta/versions/9").json()["detail"]
    v2 = served.get("/v2/models/delta")
    assert v2.status_code == 404 and "delta" in v2.json()["error"]
    # A row of the wrong model's width is refused naming the field, as for one model.
    wrong = served.post("/v1/models/gamma/log-likelihood", json={"inputs": [[0] * 5]})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"][:2] == ["body", "inputs"]


def index(client: TestClient) -> dict[tuple[str, str], str]:
    response = client.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    return {(e["name"], e["version"]): e["state"] for e in response.json()}


def test_load_unload_and_index_over_http(served: TestClient) -> None:
    gamma_version = served.get("/v1/models/gamma").json()["version"]
    assert index(served) == {
        ("alpha", served.get("/v1/models/alpha").json()["version"]): "READY",
        ("beta", "1"): "UNAVAILABLE",  # only the latest version loads at start
        ("beta", "2"): "READY",
        ("gamma", gamma_version): "READY",
    }
    assert served.post("/v2/repository/models/gamma/unload").json() == {}
    assert index(served)[("gamma", gamma_version)] == "UNAVAILABLE"
    ready = served.post("/v2/repository/index", json={"ready": True}).json()
    assert {e["name"] for e in ready} == {"alpha", "beta"}
    assert served.get("/v2/models/gamma/ready").status_code == 409
    # A request for it loads it again (MADE_LOAD_ON_DEMAND is on by default).
    rows = {"inputs": every_row(3)}
    assert served.post("/v1/models/gamma/log-likelihood", json=rows).status_code == 200
    assert served.get("/v2/models/gamma/ready").status_code == 200
    assert served.post("/v2/repository/models/beta/load").json() == {}
    assert served.post("/v2/repository/models/delta/load").status_code == 404
    override = {"parameters": {"config": "{}"}}
    assert served.post("/v2/repository/models/beta/load", json=override).status_code == 400
    without_key = served.post("/v2/repository/index", headers={"Authorization": ""})
    assert without_key.status_code == 401


def test_without_loading_on_demand_an_unloaded_model_gets_503(repository: Path) -> None:
    settings = Settings(model_repository=repository, api_key=KEY, load_on_demand=False)
    with TestClient(create_app(settings), headers=AUTH) as client:
        client.post("/v2/repository/models/alpha/unload")
        refused = client.post("/v1/models/alpha/log-likelihood", json={"inputs": [[0] * 4]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "/v2/repository/models/alpha/load" in refused.json()["detail"]
        client.post("/v2/repository/models/alpha/load")
        answer = client.post("/v1/models/alpha/log-likelihood", json={"inputs": [[0] * 4]})
        assert answer.status_code == 200


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    served: TestClient, repository: Path, artifacts: dict[str, Path]
) -> None:
    broken = repository / "beta" / "3"
    shutil.copytree(artifacts["beta/3"], broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    refused = served.post("/v2/repository/models/beta/load")
    assert refused.status_code == 409
    assert "sha256" in refused.json()["error"] and "still serves" in refused.json()["error"]
    assert served.get("/v1/models/beta").json()["version"] == "2"
    rows = every_row(5)
    answer = served.post("/v1/models/beta/log-likelihood", json={"inputs": rows}).json()
    np.testing.assert_allclose(answer["log_likelihood"], offline(artifacts["beta/2"], rows))
    assert index(served)[("beta", "3")] == "UNAVAILABLE"
    # Once the version is sound, loading it swaps it in.
    shutil.rmtree(broken)
    shutil.copytree(artifacts["beta/3"], broken)
    assert served.post("/v2/repository/models/beta/load").status_code == 200
    assert served.get("/v1/models/beta").json()["version"] == "3"
    answer = served.post("/v1/models/beta/log-likelihood", json={"inputs": rows}).json()
    np.testing.assert_allclose(answer["log_likelihood"], offline(artifacts["beta/3"], rows))


def test_a_models_limits_json_sets_its_own_batching_limits(repository: Path) -> None:
    (repository / "beta" / "limits.json").write_text('{"max_batch_size": 4, "max_queue_rows": 64}')
    settings = Settings(model_repository=repository, api_key=KEY)
    with TestClient(create_app(settings), headers=AUTH) as client:
        state = client.app.state.serving
        batchers = {
            name: state.batchers[model.engine]
            for name, versions in state.models.items()
            for model in versions.values()
        }
        assert batchers["beta"].max_batch_size == 4
        assert batchers["beta"].admission.max_rows == 64
        assert batchers["alpha"].max_batch_size == settings.max_batch_size == 256
        listed = {m["name"]: m["versions"] for m in client.get("/v1/models").json()["models"]}
        beta_2 = next(v for v in listed["beta"] if v["version"] == "2")
        assert beta_2["limits"]["max_batch_size"] == 4
        assert next(v for v in listed["beta"] if v["version"] == "1")["limits"] is None
        assert listed["alpha"][0]["limits"]["max_batch_size"] == 256
        # A limit that does not validate is refused at load, naming the file and the field,
        # and the version loaded before keeps serving with its limits.
        (repository / "beta" / "limits.json").write_text('{"max_batch_size": 0, "batch": 1}')
        refused = client.post("/v2/repository/models/beta/load")
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert "beta/limits.json" in error and "max_batch_size" in error and "batch:" in error
        assert state.batchers[state.models["beta"]["2"].engine].max_batch_size == 4
        rows = {"inputs": every_row(5)}
        assert client.post("/v1/models/beta/log-likelihood", json=rows).status_code == 200
    with pytest.raises(ArtifactError, match=r"beta/limits\.json: max_batch_size"):
        prepare_startup(settings)


def test_the_least_recently_used_model_is_unloaded_past_the_budget(repository: Path) -> None:
    with pytest.raises(ArtifactError, match="MADE_STARTUP_MODELS"):
        prepare_startup(Settings(model_repository=repository, max_loaded_models=2))
    settings = Settings(
        model_repository=repository, max_loaded_models=2, startup_models=["alpha", "beta"]
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/models/alpha/log-likelihood", json={"inputs": [[0] * 4]}).is_success
        # gamma loads on demand; beta, used least recently, makes room.
        assert client.post("/v1/models/gamma/sample", json={"num_samples": 1}).is_success
        loaded = client.app.state.serving.models
        assert sorted(loaded) == ["alpha", "gamma"]
        # beta comes back on demand in turn, and alpha (used before gamma) goes.
        assert client.post("/v1/models/beta/sample", json={"num_samples": 1}).is_success
        assert sorted(loaded) == ["beta", "gamma"]


def test_metrics_and_logs_name_the_model(
    served: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="made_serve.access"):
        for name in ("alpha", "gamma", "gamma"):
            rows = {"inputs": [[0] * DIMS[name]]}
            assert served.post(f"/v1/models/{name}/log-likelihood", json=rows).is_success
    logged = [(r.model, r.model_version) for r in caplog.records if r.route.endswith("likelihood")]
    gamma_version = served.get("/v1/models/gamma").json()["version"]
    assert logged[-1] == ("gamma", gamma_version)
    text = served.get("/metrics").text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value for s in samples if s.name == name and labels.items() <= s.labels.items()
        )

    route = "/v1/models/{name}/log-likelihood"
    assert total("made_http_requests_total", route=route, model="gamma") == 2
    assert total("made_http_requests_total", route=route, model="alpha") == 1
    assert total("made_batch_rows_count", model="gamma") >= 1  # its own batcher
    queues = {s.labels["model"] for s in samples if s.name == "made_batch_queue_rows"}
    assert queues == {"alpha", "beta", "gamma"}


def test_the_client_talks_to_a_named_model(served: TestClient) -> None:
    beta_one = MadeClient(client=served, model="beta", version="1")
    assert beta_one.model()["version"] == "1"
    assert beta_one.sample(3, seed=0).samples.shape == (3, 5)
    assert [m["name"] for m in beta_one.models()] == ["alpha", "beta", "gamma"]
    gamma = MadeClient(client=served, model="gamma")
    assert gamma.log_likelihood(np.zeros((2, 3))).log_likelihood.shape == (2,)


# -- a real process: tritonclient, and reloads under concurrent traffic --------------------------
@pytest.fixture
def server(repository: Path, tmp_path: Path) -> Iterator[str]:
    port, log = free_port(), tmp_path / "serve.log"
    command = [MADE_SERVE, "--model-repository", repository, "--port", str(port)]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MADE_API_KEY": KEY},
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process, signal.SIGTERM, 30.0)


@pytest.mark.slow
def test_tritonclient_repository_calls(server: str, artifacts: dict[str, Path]) -> None:
    # headers=dict(AUTH): tritonclient adds its own entries to the dict it is given.
    client = triton.InferenceServerClient(server, network_timeout=30.0)
    try:
        entries = client.get_model_repository_index(headers=dict(AUTH))
        assert {(e["name"], e["state"]) for e in entries} >= {("beta", "READY")}
        client.unload_model("gamma", headers=dict(AUTH))
        assert not client.is_model_ready("gamma")
        client.load_model("gamma", headers=dict(AUTH))
        assert client.is_model_ready("gamma")
        rows = np.asarray(every_row(5), dtype=np.float32)
        for version in ("1", "2"):
            tensor = triton.InferInput("x", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            result = client.infer("beta", [tensor], model_version=version, headers=dict(AUTH))
            expected = offline(artifacts[f"beta/{version}"], rows.tolist())
            np.testing.assert_allclose(result.as_numpy("log_likelihood"), expected, rtol=1e-6)
            assert result.get_response()["model_version"] == version
    finally:
        client.close()


@pytest.mark.slow
def test_traffic_to_every_model_while_one_is_reloaded_sees_no_error_and_no_mixed_answer(
    server: str, repository: Path, artifacts: dict[str, Path]
) -> None:
    """Three threads score their own model's rows while beta's version 3 is loaded: every answer
    is wholly one version's, and every request is answered."""
    rows = {name: every_row(dim) for name, dim in DIMS.items()}
    expected = {name: [offline(artifacts[folder_of(name, None)], rows[name])] for name in DIMS}
    expected["beta"].append(offline(artifacts["beta/3"], rows["beta"]))
    failures: list[str] = []
    seen: dict[str, set[int]] = {name: set() for name in DIMS}
    stop_traffic = threading.Event()

    def traffic(name: str) -> None:
        with httpx.Client(base_url=f"http://{server}", headers=AUTH, timeout=30) as http:
            while not stop_traffic.is_set():
                answer = http.post(f"/v1/models/{name}/log-likelihood", json={"inputs": rows[name]})
                if answer.status_code != 200:
                    failures.append(f"{name}: {answer.status_code} {answer.text}")
                    continue
                got = np.array(answer.json()["log_likelihood"])
                matches = [i for i, e in enumerate(expected[name]) if np.allclose(got, e)]
                if not matches:
                    failures.append(f"{name}: an answer of no single version")
                seen[name].update(matches)

    threads = [threading.Thread(target=traffic, args=(name,)) for name in DIMS]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while not all(seen.values()):  # poll until every model has answered once, on version 2
            assert time.monotonic() < deadline and not failures, failures[:5]
            time.sleep(0.01)
        shutil.copytree(artifacts["beta/3"], repository / "beta" / "3")
        loaded = httpx.post(f"http://{server}/v2/repository/models/beta/load", headers=AUTH)
        assert loaded.status_code == 200, loaded.text
        after = httpx.post(
            f"http://{server}/v1/models/beta/log-likelihood",
            json={"inputs": rows["beta"]},
            headers=AUTH,
        )
        np.testing.assert_allclose(after.json()["log_likelihood"], expected["beta"][1])
    finally:
        stop_traffic.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[:5]
    assert seen["beta"] == {0, 1}  # the old version answered before the swap, the new one after


def test_made_serve_refuses_an_unsound_repository_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "models" / "empty").mkdir(parents=True)
    for root, problem in ((tmp_path / "absent", "not a directory"), (tmp_path / "models", "empty")):
        result = subprocess.run(
            [MADE_SERVE, "--model-repository", root],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and problem in result.stderr
