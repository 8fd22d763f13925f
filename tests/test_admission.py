"""Batch-queue admission: the queue holds what the model works off within the request timeout at
its measured rows/s, within a memory bound. Rates are injected and the model's time is a fake
clock, so every figure here is exact."""

import asyncio
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.inference.batcher import Admission, Batcher, BatchStats, Throughput
from service.inference.errors import Unavailable
from service.settings import Settings
from service.transport.app import create_app
from tests.conftest import TINY_DIM, run_async

MNIST_DIM = 784


def rows(count: int, dim: int = MNIST_DIM) -> np.ndarray:
    return np.zeros((count, dim), dtype=np.float32)


def default_admission(**overrides: object) -> Admission:
    settings = Settings(**overrides)
    return Admission(settings.request_timeout_s, settings.max_queue_bytes, settings.max_queue_rows)


def test_the_wait_bound_admits_what_the_model_works_off_within_the_timeout() -> None:
    admission = Admission(max_wait_s=1.0, max_bytes=2**40)
    assert admission.refusal(900, 0, rows(100), rows_per_s=1000) is None  # 1.0 s of work
    refusal = admission.refusal(901, 0, rows(100), rows_per_s=1000)  # 1.001 s
    assert refusal is not None and refusal.startswith("queue full")
    assert "901 rows waiting" in refusal and "1 s request timeout" in refusal
    # The same queue at twice the rate is half the wait.
    assert admission.refusal(1900, 0, rows(100), rows_per_s=2000) is None


def test_the_byte_bound_refuses_rows_that_would_pass_it() -> None:
    row_bytes = 4 * MNIST_DIM
    admission = Admission(max_wait_s=30.0, max_bytes=10 * row_bytes)
    assert admission.refusal(8, 8 * row_bytes, rows(2), rows_per_s=1e9) is None
    refusal = admission.refusal(9, 9 * row_bytes, rows(2), rows_per_s=1e9)
    assert refusal is not None and f"the {10 * row_bytes} byte limit" in refusal


def test_a_row_bound_applies_only_when_set() -> None:
    assert Admission(30.0, 2**40).refusal(10_000, 0, rows(1, 8), rows_per_s=1e9) is None
    assert Admission(30.0, 2**40, max_rows=10_000).refusal(10_000, 0, rows(1, 8), 1e9)


def test_defaults_admit_64_clients_of_100_rows_that_a_4096_row_queue_refused() -> None:
    """Issue 13's load: the reference model (D = 784) answers 8,400 rows/s; 64 x 100 rows are
    0.76 s of work and 20 MB of rows, well inside a 30 s timeout and the byte bound."""
    admission, old_rule = default_admission(), default_admission(max_queue_rows=4096)
    refused, refused_before = 0, 0
    for client in range(64):
        queued = client * 100
        refused += admission.refusal(queued, queued * 4 * MNIST_DIM, rows(100), 8400) is not None
        refused_before += old_rule.refusal(queued, 0, rows(100), 8400) is not None
    assert refused == 0
    assert refused_before == 24  # the 41st client on


def test_throughput_starts_at_its_measured_rate_and_moves_to_the_batches() -> None:
    throughput = Throughput(rows_per_s=10_000, rows=256, smoothing=0.2)
    assert throughput.rows_per_s == pytest.approx(10_000)
    throughput.observe(256, 0.256)  # a batch at 1,000 rows/s
    assert throughput.rows_per_s == pytest.approx(256 / (0.8 * 0.0256 + 0.2 * 0.256))
    for _ in range(40):
        throughput.observe(256, 0.256)
    assert throughput.rows_per_s == pytest.approx(1000, rel=1e-3)


def test_throughput_weights_batches_by_their_rows() -> None:
    """A one-row batch, slow per row, moves the estimate by its row, not as much as a full one."""
    throughput = Throughput(rows_per_s=1000, rows=256, smoothing=0.5)
    throughput.observe(1, 0.01)  # 100 rows/s, but for one row
    assert throughput.rows_per_s == pytest.approx((128 + 0.5) / (0.128 + 0.005))
    assert throughput.rows_per_s > 900


def test_throughput_needs_a_positive_start() -> None:
    with pytest.raises(ValueError, match="rows_per_s"):
        Throughput(rows_per_s=0)


class FakeModel:
    """A model that takes ``seconds_per_row`` of a fake clock per row and returns row sums."""

    def __init__(self, seconds_per_row: float):
        self.seconds_per_row = seconds_per_row
        self.now = 0.0
        self.calls: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        self.now += len(batch) * self.seconds_per_row
        return batch.sum(axis=1, keepdims=True)


def batcher_for(model: FakeModel, rows_per_s: float, rejected: list[int]) -> Batcher:
    return Batcher(
        model,
        max_batch_size=4,
        max_queue_delay_s=0.0,
        admission=Admission(max_wait_s=1.0, max_bytes=2**40),
        throughput=Throughput(rows_per_s, rows=4),
        stats=BatchStats(on_reject=lambda: rejected.append(1)),
        timer=lambda: model.now,
    )


def test_backlog_batches_teach_the_batcher_its_rate_and_admission_follows() -> None:
    """Start at an optimistic 1e6 rows/s; ten full batches at 500 rows/s bring the estimate down
    to what those batches took, and a request that much work would take is refused."""
    model, rejected = FakeModel(seconds_per_row=1 / 500), []

    async def scenario() -> tuple[float, list[np.ndarray]]:
        batcher = batcher_for(model, 1e6, rejected)
        batcher.start()
        jobs = [np.full((4, 3), i, dtype=np.float32) for i in range(10)]
        answers = await asyncio.gather(*(batcher.submit(job) for job in jobs))
        rate = batcher.throughput.rows_per_s
        with pytest.raises(Unavailable, match="queue full"):
            await batcher.submit(np.zeros((int(rate * 1.01) + 1, 3), dtype=np.float32))
        await batcher.close()
        return rate, answers

    rate, answers = run_async(scenario())
    expected = Throughput(1e6, rows=4)
    for _ in range(10):
        expected.observe(4, 4 / 500)
    assert model.calls == [4] * 10
    assert rate == pytest.approx(expected.rows_per_s) and rate < 600
    assert rejected == [1]
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, np.full((4, 1), 3 * i))


def test_a_batch_with_nothing_behind_it_leaves_the_rate_alone() -> None:
    """One row with an empty queue behind it is no measure of how fast a backlog drains."""
    model, rejected = FakeModel(seconds_per_row=1.0), []

    async def scenario() -> float:
        batcher = batcher_for(model, 1000, rejected)
        batcher.start()
        await batcher.submit(np.ones((1, 3), dtype=np.float32))
        await batcher.close()
        return batcher.throughput.rows_per_s

    assert run_async(scenario()) == pytest.approx(1000)
    assert model.calls == [1]


def test_the_app_measures_the_rate_at_start_and_applies_the_settings(tiny_artifact: Path) -> None:
    settings = Settings(model_dir=tiny_artifact, request_timeout_s=2.0, max_queue_bytes=4096)
    with TestClient(create_app(settings)) as client:
        serving = client.app.state.serving
        batcher = serving.batchers[serving.engine]
        assert batcher.admission == Admission(2.0, 4096, None)
        assert batcher.throughput.rows_per_s > 0
        # 20 rows at 5 rows/s are 4 s of work: more than the timeout, refused at once.
        batcher.throughput = Throughput(rows_per_s=5)
        inputs = [[0] * TINY_DIM] * 20
        # The hot route and (an option spelled out) the general route share the batcher.
        for body in ({"inputs": inputs}, {"inputs": inputs, "combination": "mixture"}):
            response = client.post("/v1/log-likelihood", json=body)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert "request timeout" in response.json()["detail"]
        batcher.throughput = Throughput(rows_per_s=1e9)
        for _ in range(4):  # 640 bytes each, freed once answered
            assert client.post("/v1/log-likelihood", json={"inputs": inputs}).status_code == 200
        # 120 rows of D = 8 are 3,840 bytes of float32: within the bound of an empty queue.
        wide = {"inputs": [[1] * TINY_DIM] * 120}
        assert client.post("/v1/log-likelihood", json=wide).status_code == 200
        # 200 rows are 6,400 bytes: past the byte bound whatever the rate.
        response = client.post("/v1/log-likelihood", json={"inputs": [[1] * TINY_DIM] * 200})
        assert response.status_code == 503 and "byte limit" in response.json()["detail"]
