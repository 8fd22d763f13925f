"""SIGTERM on a real ``made-serve`` process: in-flight requests finish with 200, then exit 0."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port

GRACE_S = 60.0  # generous: the machine is shared; the drain itself takes a few seconds
START_TIMEOUT_S = 60.0
SLOW_REQUESTS = 4
# Observing only the last two dimensions is a prefix of no member's ordering: every row takes
# the importance-sampling path, whose cost grows with rows x particles (about a second here).
SLOW_BODY = {
    "inputs": [[None] * 6 + [1, 0]] * 128,
    "num_samples": 1,
    "num_particles": 16384,
    "seed": 0,
}


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def made_serve(
    artifact: Path, log_file: Path, grace_s: float = GRACE_S
) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADE_")}
    env.update(
        MADE_MODEL_DIR=str(artifact),
        MADE_HOST="127.0.0.1",
        MADE_PORT=str(port),
        MADE_SHUTDOWN_GRACE_S=str(grace_s),
        MADE_INTRA_OP_THREADS="1",
    )
    executable = Path(sys.executable).with_name("made-serve")
    with log_file.open("wb") as log:
        process = subprocess.Popen([str(executable)], env=env, stdout=log, stderr=log)
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def ready(process: subprocess.Popen, base: str) -> bool:
    assert process.poll() is None, "made-serve exited during start-up"
    try:
        return httpx.get(f"{base}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def posts_in_progress(base: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "made_http_requests_in_progress" and sample.labels["method"] == "POST"
    ]
    return values[0] if values else 0.0  # the series appears with the first POST


def refuses_connections(base: str) -> bool:
    try:
        httpx.get(f"{base}/healthz")
    except httpx.ConnectError:
        return True
    except httpx.TransportError:  # accepted just before the listener closed, then dropped
        return False
    return False


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_then_exits_zero(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "made-serve.log"
    with made_serve(tiny_artifact, log_file) as (process, base):
        poll(lambda: ready(process, base), START_TIMEOUT_S, "/readyz to answer 200")
        results: list[httpx.Response] = []

        def slow_request() -> None:
            results.append(httpx.post(f"{base}/v1/complete", json=SLOW_BODY, timeout=GRACE_S))

        threads = [threading.Thread(target=slow_request) for _ in range(SLOW_REQUESTS)]
        for thread in threads:
            thread.start()
        poll(
            lambda: posts_in_progress(base) == SLOW_REQUESTS,
            START_TIMEOUT_S,
            "the slow requests to be in flight",
        )
        process.send_signal(signal.SIGTERM)
        poll(lambda: refuses_connections(base), GRACE_S, "the listener to close")
        for thread in threads:
            thread.join(GRACE_S)
        assert process.wait(timeout=GRACE_S) == 0
    assert [r.status_code for r in results] == [200] * SLOW_REQUESTS
    assert all(len(r.json()["completions"]) == len(SLOW_BODY["inputs"]) for r in results)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]  # all JSON
    completed = [line for line in lines if line.get("route") == "/v1/complete"]
    assert [line["status"] for line in completed] == [200] * SLOW_REQUESTS
    assert any(line["logger"].startswith("uvicorn") for line in lines)


@pytest.mark.slow
def test_requests_still_running_past_the_grace_get_503_with_retry_after(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    """uvicorn cancels what still runs once the grace is over: those clients hear 503 and
    ``Retry-After``, as when the queue is full, so they retry on another replica."""
    log_file = tmp_path / "made-serve.log"
    # 1024 rows on the importance path: seconds of work, far past a grace of half a second.
    body = {**SLOW_BODY, "inputs": SLOW_BODY["inputs"] * 8}
    with made_serve(tiny_artifact, log_file, grace_s=0.5) as (process, base):
        poll(lambda: ready(process, base), START_TIMEOUT_S, "/readyz to answer 200")
        results: list[httpx.Response] = []

        def slow_request() -> None:
            results.append(httpx.post(f"{base}/v1/complete", json=body, timeout=GRACE_S))

        threads = [threading.Thread(target=slow_request) for _ in range(2)]
        for thread in threads:
            thread.start()
        poll(lambda: posts_in_progress(base) == 2, START_TIMEOUT_S, "the requests to be in flight")
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(GRACE_S)
        assert process.wait(timeout=GRACE_S) == 0
    assert [r.status_code for r in results] == [503, 503]
    for response in results:
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"detail": "the service is shutting down; retry"}
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    completed = [line for line in lines if line.get("route") == "/v1/complete"]
    assert [line["status"] for line in completed] == [503, 503]
