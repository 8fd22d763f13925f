"""/metrics (parsed with prometheus_client's own parser), JSON request logs and X-Request-ID."""

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.contract.artifact import read_manifest
from service.settings import Settings
from service.transport.app import create_app
from service.transport.request_log import JsonFormatter
from tests.servers import http_scope

ROWS = [[0, 1, 0, 1, 1, 0, 0, 1], [1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]]


@pytest.fixture
def client(tiny_artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=tiny_artifact))) as http:
        yield http


def samples(http: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics as {(name, labels): value}."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(snapshot: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels`` (whatever their other labels)."""
    wanted = frozenset(labels.items())
    return sum(v for (n, have), v in snapshot.items() if n == name and wanted <= have)


def requests_total(snapshot: dict, route: str, method: str, status: int) -> float:
    return value(
        snapshot, "made_http_requests_total", route=route, method=method, status=str(status)
    )


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    before = samples(client)
    for _ in range(3):
        assert client.post("/v1/log-likelihood", json={"inputs": ROWS}).status_code == 200
    assert client.post("/v1/log-likelihood", json={"inputs": [[2] * 8]}).status_code == 422
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/v2/models/nope").status_code == 404
    after = samples(client)

    def delta(route: str, method: str, status: int) -> float:
        return requests_total(after, route, method, status) - requests_total(
            before, route, method, status
        )

    assert delta("/v1/log-likelihood", "POST", 200) == 3
    assert delta("/v1/log-likelihood", "POST", 422) == 1
    assert delta("unmatched", "GET", 404) == 1
    # The template, not the path, so model names cannot multiply the series.
    assert delta("/v2/models/{name}", "GET", 404) == 1
    count = "made_http_request_duration_seconds_count"
    route = {"route": "/v1/log-likelihood"}
    assert value(after, count, **route) - value(before, count, **route) == 4
    assert value(after, "made_http_request_duration_seconds_sum", **route) > value(
        before, "made_http_request_duration_seconds_sum", **route
    )


def test_batches_observe_their_rows_and_queue_wait(client: TestClient) -> None:
    before = samples(client)
    for count in (1, 3, 2):
        assert client.post("/v1/log-likelihood", json={"inputs": ROWS[:count]}).status_code == 200
    after = samples(client)
    # Sequential requests: each is its own batch, so the histogram sums the rows sent.
    assert value(after, "made_batch_rows_sum") - value(before, "made_batch_rows_sum") == 6
    assert value(after, "made_batch_rows_count") - value(before, "made_batch_rows_count") == 3
    assert (
        value(after, "made_batch_rows_bucket", le="1.0")
        - value(before, "made_batch_rows_bucket", le="1.0")
        == 1
    )
    waits = "made_batch_queue_wait_seconds_count"
    assert value(after, waits) - value(before, waits) == 3
    assert value(after, "made_batch_queue_rows") == 0


def test_model_and_process_info(client: TestClient, tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    snapshot = samples(client)
    model = [labels for (name, labels) in snapshot if name == "made_model_info"]
    assert [dict(labels) for labels in model] == [
        {
            "model": manifest.name,
            "version": manifest.onnx.sha256[:12],
            "name": manifest.name,
            "sha256": manifest.onnx.sha256,
            "members": str(manifest.num_members),
            "dim": str(manifest.dim),
        }
    ]
    (process,) = [dict(labels) for (name, labels) in snapshot if name == "made_process_info"]
    assert process["workers"] == "1"


def test_queue_full_rejections_are_counted(tiny_artifact: Path) -> None:
    settings = Settings(model_dir=tiny_artifact, max_queue_rows=2)
    with TestClient(create_app(settings)) as http:
        before = samples(http)
        response = http.post("/v1/log-likelihood", json={"inputs": ROWS})
        assert response.status_code == 503
        after = samples(http)
    assert (
        value(after, "made_batch_rejected_total") - value(before, "made_batch_rejected_total") == 1
    )
    assert requests_total(after, "/v1/log-likelihood", "POST", 503) == 1


def test_each_app_has_its_own_registry(tiny_artifact: Path) -> None:
    with (
        TestClient(create_app(Settings(model_dir=tiny_artifact))) as first,
        TestClient(create_app(Settings(model_dir=tiny_artifact))) as second,
    ):
        assert first.post("/v1/log-likelihood", json={"inputs": ROWS}).status_code == 200
        assert requests_total(samples(first), "/v1/log-likelihood", "POST", 200) == 1
        assert requests_total(samples(second), "/v1/log-likelihood", "POST", 200) == 0


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict]:
    """The captured request-log lines, rendered by the service's formatter and parsed back."""
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(r)) for r in caplog.records if r.name == "made_serve.access"
    ]


def test_one_json_log_line_per_request_with_the_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="made_serve.access")
    response = client.post(
        "/v1/log-likelihood", json={"inputs": ROWS}, headers={"X-Request-ID": "trace-42/a b"}
    )
    assert response.headers["x-request-id"] == "trace-42/a b"
    (line,) = access_records(caplog)
    assert line["request_id"] == "trace-42/a b"
    assert line["route"] == "/v1/log-likelihood"
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert line["rows"] == len(ROWS)
    assert line["duration_ms"] > 0
    assert line["level"] == "info" and line["logger"] == "made_serve.access"


@pytest.mark.parametrize("sent", [None, "x" * 129, "", "tab\there", "caf\u00e9"])
def test_missing_or_invalid_request_ids_are_replaced(
    client: TestClient, caplog: pytest.LogCaptureFixture, sent: str | None
) -> None:
    caplog.set_level(logging.INFO, logger="made_serve.access")
    headers = {} if sent is None else {"X-Request-ID": sent.encode("utf-8")}
    first = client.get("/healthz", headers=headers).headers["x-request-id"]
    second = client.get("/healthz", headers=headers).headers["x-request-id"]
    for generated in (first, second):
        assert len(generated) == 32 and int(generated, 16) >= 0
    assert first != second
    assert [line["request_id"] for line in access_records(caplog)] == [first, second]
    assert all(line["rows"] is None for line in access_records(caplog))


def test_the_longest_valid_request_id_is_kept(client: TestClient) -> None:
    sent = "r" * 128
    assert client.get("/readyz", headers={"X-Request-ID": sent}).headers["x-request-id"] == sent


def test_unhandled_errors_answer_500_with_the_request_id(
    tiny_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(model_dir=tiny_artifact))

    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_api_route("/boom", boom)
    caplog.set_level(logging.INFO, logger="made_serve.access")
    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.get("/boom", headers={"X-Request-ID": "oops-1"})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}
        assert response.headers["x-request-id"] == "oops-1"
        assert requests_total(samples(http), "/boom", "GET", 500) == 1
    boom = [line for line in access_records(caplog) if line["route"] == "/boom"]
    assert [(line["status"], line["request_id"]) for line in boom] == [(500, "oops-1")]


def test_formatter_writes_one_json_object_with_extras_and_exceptions() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.getLogger("made_serve").makeRecord(
            "made_serve", logging.ERROR, __file__, 1, "failed %s", ("once",), sys.exc_info()
        )
    record.rows = 3
    text = JsonFormatter().format(record)
    assert "\n" not in text  # one line, even with a multi-line traceback inside
    line = json.loads(text)
    assert line["message"] == "failed once"
    assert line["level"] == "error"
    assert line["rows"] == 3
    assert "ValueError: bad value" in line["exception"]


@pytest.mark.parametrize("path", ["/v1/log-likelihood", "/v1/complete", "/v2/models/{name}/infer"])
def test_a_client_gone_mid_body_is_counted_as_499_without_a_traceback(
    tiny_artifact: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Fed straight to the app: part of the body, then ``http.disconnect``, as uvicorn does."""
    app = create_app(Settings(model_dir=tiny_artifact))
    url = path.format(name=read_manifest(tiny_artifact).name)
    messages = [
        {"type": "http.request", "body": b'{"inputs": [[0, 1', "more_body": True},
        {"type": "http.disconnect"},
    ]
    scope = http_scope(url, [(b"content-type", b"application/json"), (b"content-length", b"100")])

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        pass

    caplog.set_level(logging.INFO)
    with TestClient(app) as http:
        http.portal.call(app, scope, receive, send)
        snapshot = samples(http)
    assert requests_total(snapshot, path, "POST", 499) == 1
    assert not [
        key
        for key in snapshot
        if key[0] == "made_http_requests_total" and dict(key[1])["status"] == "500"
    ]
    (line,) = [line for line in access_records(caplog) if line["path"] == url]
    assert (line["route"], line["status"]) == (path, 499)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
