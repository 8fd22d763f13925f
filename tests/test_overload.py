"""Overload: 200 concurrent clients against a real made-serve process with its default admission.

The load is a genuine overload under that admission, which bounds the queue by the work the model
can do within the request timeout: the clients keep about four times more rows in flight than the
model works off in that time, on a model slow enough (two hidden layers of 1024) that the server,
not the load generator, is the limit. Every answer is a correct 200 or a 503 with Retry-After;
nothing else, no crash, no client timeout past the configured request timeout, and resident memory
settles where it was after warm-up.
"""

import asyncio
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from service.inference.batcher import measured_rows_per_s
from service.inference.engine import Engine
from service.settings import Settings, available_cpus
from tests.conftest import TINY_DIM, export_tiny, run_async
from tests.servers import free_port

CLIENTS = 200
REQUEST_TIMEOUT_S = 1.0
OVERLOAD = 4  # rows in flight / rows the model works off within the request timeout
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slow_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """D = 8 with two hidden layers of 1024: a few thousand rows/s, where the tiny model's
    hundreds of thousands would need more rows in flight than the client can keep there."""
    return export_tiny(tmp_path_factory, "slow", TINY_DIM, hidden_sizes=[1024, 1024], epochs=1)


@pytest.fixture
def server(slow_artifact: Path) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    env = {
        **os.environ,
        "MADE_MAX_QUEUE_DELAY_MS": "5",
        "MADE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "MADE_LOG_LEVEL": "warning",
        "MADE_API_KEY": "",
    }
    script = Path(sys.executable).with_name("made-serve")
    process = subprocess.Popen(
        [str(script), "--model", str(slow_artifact), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # poll readiness
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "made-serve did not become ready"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


async def load(
    url: str, seconds: float, expected: dict[bytes, np.ndarray]
) -> tuple[Counter, Counter]:
    """CLIENTS clients send the bodies in turn until the time is up; tally what comes back, and
    notes: why the 503s were answered (refused at the queue, or timed out in it), and resends.

    uvicorn closes a keep-alive connection left idle for 5 s. This client (httpx, 200 connections
    in one thread, slower than the server) can send its next request just as that happens, and
    then reads a closed connection; HTTP clients resend such a request, and so does this one, once.
    """
    outcomes: Counter = Counter()
    notes: Counter = Counter()
    bodies = list(expected)
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S + 5)

    async def post(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
        headers = {"content-type": "application/json"}
        try:
            return await http.post(f"{url}/v1/log-likelihood", content=body, headers=headers)
        except httpx.ReadError:
            notes["resent after a keep-alive close"] += 1
            return await http.post(f"{url}/v1/log-likelihood", content=body, headers=headers)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        i = index
        while time.monotonic() < stop:
            body = bodies[i % len(bodies)]
            i += 1
            response = await post(http, body)
            if response.status_code == 200:
                values = np.array(response.json()["log_likelihood"])
                right = np.abs(values - expected[body]).max() < 1e-6
                outcomes["200 correct" if right else "200 WRONG"] += 1
            elif response.status_code == 503 and response.headers.get("retry-after"):
                outcomes["503 retry-after"] += 1
                notes[response.json()["detail"].split(":")[0]] += 1
            else:
                outcomes[f"{response.status_code} unexpected"] += 1

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        await asyncio.gather(*(client(i, http) for i in range(CLIENTS)))
    return outcomes, notes


def overload_rows_per_request(engine: Engine) -> int:
    """Rows per request so that the clients keep OVERLOAD times the rows in flight that the model
    works off within the request timeout, at the rate the server measures at start-up."""
    batch = Settings().max_batch_size
    rows = (np.random.default_rng(1).random((batch, engine.dim)) < 0.5).astype(np.float32)
    rows_per_s = measured_rows_per_s(engine.member_log_probs, rows)
    return min(Settings().max_rows, math.ceil(OVERLOAD * rows_per_s * REQUEST_TIMEOUT_S / CLIENTS))


def test_overload_gets_correct_answers_or_503_and_memory_settles(server, slow_artifact):
    url, process = server
    engine = Engine.load(slow_artifact, available_cpus())
    size = overload_rows_per_request(engine)
    rng = np.random.default_rng(0)
    expected = {}
    for _ in range(8):
        rows = (rng.random((size, engine.dim)) < 0.5).astype(np.float32)
        body = b'{"inputs": ' + str(rows.astype(int).tolist()).encode() + b"}"
        expected[body] = engine.log_likelihood(rows).log_likelihood

    run_async(load(url, 2.0, expected))  # warm-up: connections, arenas, caches
    before = process.memory_info().rss
    outcomes, notes = run_async(load(url, 6.0, expected))
    after = process.memory_info().rss
    rss = f"RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB"
    print(f"{size} rows/request; outcomes {dict(outcomes)}; {dict(notes)}; {rss}")

    assert set(outcomes) <= {"200 correct", "503 retry-after"}, outcomes
    assert outcomes["200 correct"] > 0 and outcomes["503 retry-after"] > 0, outcomes
    assert notes["queue full"] > 0, notes  # admission, not only timeouts, turned work away
    assert process.is_running() and httpx.get(f"{url}/readyz").status_code == 200
    assert after <= 1.10 * before, (before, after)


def test_a_request_past_its_timeout_gets_503_and_its_work_is_dropped(tiny_artifact):
    """The batch waits longer than the request may: the client hears 503, the model never runs."""
    from fastapi.testclient import TestClient

    from service.settings import Settings
    from service.transport.app import create_app

    engine = Engine.load(tiny_artifact)
    calls: list[int] = []
    run_model = engine.member_log_probs
    settings = Settings(
        model_dir=tiny_artifact, request_timeout_s=0.2, max_queue_delay_ms=1000, max_batch_size=64
    )
    engine.member_log_probs = lambda rows: calls.append(len(rows)) or run_model(rows)
    with TestClient(create_app(settings, engine=engine)) as client:
        after_warm_up = len(calls)
        response = client.post("/v1/log-likelihood", json={"inputs": [[0] * engine.dim]})
        assert response.status_code == 503
        assert "timed out" in response.json()["detail"] and response.headers["retry-after"]
        serving = client.app.state.serving
        batcher = serving.batchers[serving.engine]
        deadline = time.monotonic() + 10
        while batcher.queued_rows:  # poll until the batcher has looked at the expired job
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert len(calls) == after_warm_up  # shutdown drained the batcher: the job was never run
