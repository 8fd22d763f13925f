"""Overload: 200 concurrent clients against a real made-serve process with a small queue.

Every answer is a correct 200 or a 503 with Retry-After; nothing else, no crash, no client timeout
past the configured request timeout, and resident memory settles where it was after warm-up.
"""

import asyncio
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

from service.engine import Engine
from tests.conftest import run_async
from tests.servers import free_port

CLIENTS = 200
REQUEST_TIMEOUT_S = 5.0
pytestmark = pytest.mark.slow


@pytest.fixture
def server(tiny_artifact: Path) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    env = {
        **os.environ,
        "MADE_MAX_QUEUE_ROWS": "8",
        "MADE_MAX_QUEUE_DELAY_MS": "5",
        "MADE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "MADE_LOG_LEVEL": "warning",
        "MADE_API_KEY": "",
    }
    script = Path(sys.executable).with_name("made-serve")
    process = subprocess.Popen(
        [str(script), "--model", str(tiny_artifact), "--host", "127.0.0.1", "--port", str(port)],
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


async def load(url: str, seconds: float, expected: dict[bytes, float]) -> Counter:
    """CLIENTS clients send one-row requests until the time is up; tally what comes back."""
    outcomes: Counter = Counter()
    rows = list(expected)
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S + 5)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        i = index
        while time.monotonic() < stop:
            row = rows[i % len(rows)]
            i += 1
            response = await http.post(
                f"{url}/v1/log-likelihood",
                content=b'{"inputs": [' + row + b"]}",
                headers={"content-type": "application/json"},
            )
            if response.status_code == 200:
                value = response.json()["log_likelihood"][0]
                outcomes["200 correct" if abs(value - expected[row]) < 1e-6 else "200 WRONG"] += 1
            elif response.status_code == 503 and response.headers.get("retry-after"):
                outcomes["503 retry-after"] += 1
            else:
                outcomes[f"{response.status_code} unexpected"] += 1

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        await asyncio.gather(*(client(i, http) for i in range(CLIENTS)))
    return outcomes


def test_overload_gets_correct_answers_or_503_and_memory_settles(server, tiny_artifact):
    url, process = server
    engine = Engine.load(tiny_artifact)
    rows = (np.random.default_rng(0).random((32, engine.dim)) < 0.5).astype(np.float32)
    values = engine.log_likelihood(rows).log_likelihood
    expected = {
        str(r.astype(int).tolist()).encode(): float(v) for r, v in zip(rows, values, strict=True)
    }

    run_async(load(url, 2.0, expected))  # warm-up: connections, arenas, caches
    before = process.memory_info().rss
    outcomes = run_async(load(url, 6.0, expected))
    after = process.memory_info().rss
    print(f"outcomes {dict(outcomes)}; RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")

    assert set(outcomes) <= {"200 correct", "503 retry-after"}, outcomes
    assert outcomes["200 correct"] > 0 and outcomes["503 retry-after"] > 0, outcomes
    assert process.is_running() and httpx.get(f"{url}/readyz").status_code == 200
    assert after <= 1.10 * before, (before, after)


def test_a_request_past_its_timeout_gets_503_and_its_work_is_dropped(tiny_artifact):
    """The batch waits longer than the request may: the client hears 503, the model never runs."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

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
        batcher = client.app.state.runtime.batcher
        deadline = time.monotonic() + 10
        while batcher.queued_rows:  # poll until the batcher has looked at the expired job
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert len(calls) == after_warm_up  # shutdown drained the batcher: the job was never run
