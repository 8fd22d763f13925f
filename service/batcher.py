"""Dynamic batching: concurrent requests' rows are merged into one onnxruntime call.

Requests queue their rows; one worker takes up to ``max_batch_size`` rows, waiting at most
``max_queue_delay`` for more once the first arrives (like Triton's max_queue_delay_microseconds),
runs the model off the event loop and hands each request its slice. The queue is bounded in rows:
past it, callers get ``Unavailable`` (503) at once instead of an ever longer wait.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.errors import Unavailable


@dataclass
class _Job:
    rows: np.ndarray
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """Observations for metrics: callbacks the app wires to Prometheus, no-ops by default."""

    on_batch: Callable[[int], None] = lambda rows: None
    on_queue_wait: Callable[[float], None] = lambda seconds: None
    on_reject: Callable[[], None] = lambda: None


class Batcher:
    def __init__(
        self,
        model: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_rows: int,
        stats: BatchStats | None = None,
    ):
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_rows = max_queue_rows
        self.stats = stats or BatchStats()
        self._jobs: deque[_Job] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        self._worker: asyncio.Task | None = None
        self._closing = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Queue rows [B, D]; return the model's output for them, in order."""
        if self._closing:
            raise Unavailable("the service is shutting down")
        if self._queued_rows + len(rows) > self.max_queue_rows:
            self.stats.on_reject()
            raise Unavailable(
                f"queue full ({self._queued_rows} rows waiting); retry after a moment"
            )
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._queued_rows += len(rows)
        # Wake the worker only when it has something to decide: the first job of a batch, or a
        # full batch. Waking it for every job in between cost more than the model on small rows.
        if len(self._jobs) == 1 or self._queued_rows >= self.max_batch_size:
            self._wakeup.set()
        return await job.future

    async def close(self) -> None:
        """Finish every queued job, then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    def _take_batch(self) -> list[_Job]:
        batch: list[_Job] = []
        rows = 0
        while self._jobs:
            job = self._jobs[0]
            if job.future.done():  # cancelled by its request's timeout: drop its work
                self._jobs.popleft()
                self._queued_rows -= len(job.rows)
                continue
            if batch and rows + len(job.rows) > self.max_batch_size:
                break
            self._jobs.popleft()
            self._queued_rows -= len(job.rows)
            batch.append(job)
            rows += len(job.rows)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._jobs[0].queued_at + self.max_queue_delay_s
            while self._queued_rows < self.max_batch_size and not self._closing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._wakeup.wait()
                except TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            now = time.perf_counter()
            for job in batch:
                self.stats.on_queue_wait(now - job.queued_at)
            rows = np.concatenate([job.rows for job in batch]) if len(batch) > 1 else batch[0].rows
            self.stats.on_batch(len(rows))
            try:
                output = await loop.run_in_executor(self._executor, self.model, rows)
            except Exception as exc:  # hand the model's failure to every waiting request
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            start = 0
            for job in batch:
                end = start + len(job.rows)
                if not job.future.done():
                    job.future.set_result(output[start:end])
                start = end
