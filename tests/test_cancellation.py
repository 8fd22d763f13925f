"""Work for a request that timed out stops instead of running on in a worker thread."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.contract.ensemble import Cancelled
from service.inference.engine import Engine
from service.settings import Settings
from service.transport.app import create_app

# Only the last two entries observed: a prefix of no member's ordering, so every row takes the
# importance path, one row at a time.
ROW = [np.nan] * 6 + [1.0, 0.0]


@pytest.fixture(scope="module")
def engine(tiny_artifact: Path) -> Engine:
    return Engine.load(tiny_artifact)


def test_a_set_cancel_stops_before_any_row(engine):
    rows = np.array([ROW], dtype=np.float32)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        engine.complete(rows, 1, 64, np.random.default_rng(0), cancel=cancel)
    with pytest.raises(Cancelled):
        engine.marginal(rows, 64, np.random.default_rng(0), cancel=cancel)


def test_cancel_mid_work_stops_between_rows(engine, monkeypatch):
    rows = np.array([ROW] * 400, dtype=np.float32)
    done: list[int] = []
    original = engine._particles
    monkeypatch.setattr(engine, "_particles", lambda *a: (done.append(1), original(*a))[1])
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            engine.complete(rows, 1, 4096, np.random.default_rng(0), cancel=cancel)
        except Cancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 30
    while not done and time.monotonic() < deadline:
        time.sleep(0.001)
    cancel.set()
    thread.join(30)
    assert outcome and isinstance(outcome[0], Cancelled)
    assert 1 <= len(done) < len(rows)


def test_the_route_cancels_the_work_of_a_timed_out_request(engine, tiny_artifact, monkeypatch):
    seen: list[bool] = []

    def slow_complete(*args, cancel: threading.Event) -> None:
        seen.append(cancel.wait(timeout=30))  # True once the route gives up on this request
        raise Cancelled

    monkeypatch.setattr(engine, "complete", slow_complete)
    settings = Settings(model_dir=tiny_artifact, request_timeout_s=0.2)
    with TestClient(create_app(settings, engine=engine)) as client:
        response = client.post("/v1/complete", json={"inputs": [[None] * 6 + [1, 0]]})
        assert response.status_code == 503
        assert "timed out" in response.json()["detail"]
        assert response.headers["retry-after"]
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == [True]
