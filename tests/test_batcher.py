"""The batcher merges concurrent requests into one model call and hands each request its own rows'
answers, in order. Deterministic: every request is queued before the worker runs, and a batch
closes because it is full, never because a delay ran out."""

import asyncio
import itertools
from collections.abc import Callable

import numpy as np

from service.inference.batcher import Admission, Batcher, Throughput
from tests.conftest import run_async

NEVER = 3600.0  # seconds: no batch here waits for its delay to run out
SIZES = (3, 1, 5, 2, 4)  # requests of different sizes


def tagged_rows(sizes: tuple[int, ...]) -> list[np.ndarray]:
    """One [size, 2] block per request whose column 0 numbers its rows uniquely across requests."""
    starts = np.cumsum((0, *sizes))
    return [
        np.stack([np.arange(a, b), np.full(b - a, i)], axis=1).astype(np.float32)
        for i, (a, b) in enumerate(itertools.pairwise(starts))
    ]


def answer_of(rows: np.ndarray) -> np.ndarray:
    """A model whose answer identifies each row: [B, 2] rows -> [B, 3]."""
    return np.concatenate([rows, 10.0 * rows[:, :1] + 7.0], axis=1)


def batched(
    blocks: list[np.ndarray], max_batch_size: int, model: Callable[[np.ndarray], np.ndarray]
) -> list[np.ndarray | BaseException]:
    """Submit every block in the same loop turn (so they queue before the worker takes a batch)
    and return what each request got."""

    async def scenario() -> list[np.ndarray | BaseException]:
        batcher = Batcher(
            model,
            max_batch_size=max_batch_size,
            max_queue_delay_s=NEVER,
            admission=Admission(max_wait_s=NEVER, max_bytes=2**30),
            throughput=Throughput(rows_per_s=1e9),
        )
        batcher.start()
        try:
            async with asyncio.timeout(30):
                return await asyncio.gather(
                    *(batcher.submit(block) for block in blocks), return_exceptions=True
                )
        finally:
            await batcher.close()

    return run_async(scenario())


def test_requests_sharing_one_batch_each_get_their_own_rows() -> None:
    blocks = tagged_rows(SIZES)
    calls: list[int] = []

    def model(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return answer_of(rows)

    answers = batched(blocks, max_batch_size=sum(SIZES), model=model)
    assert calls == [sum(SIZES)]  # one model call for all five requests
    for block, answer in zip(blocks, answers, strict=True):
        np.testing.assert_array_equal(answer, answer_of(block))


def test_requests_split_over_batches_each_get_their_own_rows() -> None:
    """A batch of at most 6 rows: 3+1 | 5 | 2+4 run as three calls, each request whole."""
    blocks = tagged_rows(SIZES)
    calls: list[list[int]] = []

    def model(rows: np.ndarray) -> np.ndarray:
        calls.append(sorted({int(i) for i in rows[:, 1]}))
        return answer_of(rows)

    answers = batched(blocks, max_batch_size=6, model=model)
    assert calls == [[0, 1], [2], [3, 4]]
    for block, answer in zip(blocks, answers, strict=True):
        np.testing.assert_array_equal(answer, answer_of(block))


def test_a_failing_model_call_fails_every_request_of_its_batch() -> None:
    def model(rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("model broke")

    answers = batched(tagged_rows(SIZES[:3]), max_batch_size=9, model=model)
    assert len(answers) == 3
    assert all(isinstance(a, RuntimeError) and str(a) == "model broke" for a in answers)
