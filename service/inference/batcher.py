"""Dynamic batching: concurrent requests' rows are merged into one onnxruntime call.

Requests queue their rows; one worker takes up to ``max_batch_size`` rows, waiting at most
``max_queue_delay`` for more once the first arrives (like Triton's max_queue_delay_microseconds),
runs the model off the event loop and hands each request its slice.

Admission bounds the queue by what it means for its callers: a request joins only when the rows
ahead of it and its own can be worked off within the request timeout at the model's measured
rows/s, and within a memory bound; otherwise it is refused at once (``Overloaded``: retry
shortly) instead of kept for a wait it would not survive.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.inference.errors import Overloaded, ShuttingDown


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


class Throughput:
    """The model's rows/s as a moving average over the batches that worked off a backlog.

    Rows and seconds are averaged separately (exponentially, ``smoothing`` per batch) and then
    divided, so the estimate is rows per second of model time, weighted by rows. The start value
    stands for one batch of ``rows`` at ``rows_per_s``; the first real batches soon outweigh it.
    """

    def __init__(self, rows_per_s: float, rows: float = 256, smoothing: float = 0.2):
        if not rows_per_s > 0:
            raise ValueError(f"rows_per_s must be positive, got {rows_per_s}")
        self.smoothing = smoothing
        self._rows = float(rows)
        self._seconds = rows / rows_per_s

    @property
    def rows_per_s(self) -> float:
        return self._rows / self._seconds

    def observe(self, rows: int, seconds: float) -> None:
        """One batch of ``rows`` took ``seconds`` of model time."""
        a = self.smoothing
        self._rows += a * (rows - self._rows)
        self._seconds += a * (max(seconds, 1e-9) - self._seconds)


def measured_rows_per_s(model: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> float:
    """Rows/s of one model call on ``rows`` [B, D], after an untimed call (lazy initialisation is
    not throughput): the start value of a batcher's ``Throughput``."""
    model(rows)
    start = time.perf_counter()
    model(rows)
    return len(rows) / max(time.perf_counter() - start, 1e-9)


@dataclass(frozen=True)
class Admission:
    """What the queue may hold: rows the model works off within ``max_wait_s`` at its measured
    rate (a request waiting longer would time out anyway), rows of at most ``max_bytes``, and at
    most ``max_rows`` rows when that is set."""

    max_wait_s: float
    max_bytes: int
    max_rows: int | None = None

    def refusal(
        self, queued_rows: int, queued_bytes: int, rows: np.ndarray, rows_per_s: float
    ) -> str | None:
        """Why ``rows`` may not join a queue holding ``queued_rows`` rows (``queued_bytes``
        bytes), or None when they may."""
        waiting = queued_rows + len(rows)
        wait_s = waiting / rows_per_s
        if wait_s > self.max_wait_s:
            return (
                f"queue full: {queued_rows} rows waiting, about {wait_s:.2f} s of work with this "
                f"request's at {rows_per_s:,.0f} rows/s, more than the {self.max_wait_s:g} s "
                "request timeout; retry after a moment"
            )
        if queued_bytes + rows.nbytes > self.max_bytes:
            return (
                f"queue full: {queued_bytes} bytes of rows waiting, {rows.nbytes} more would pass "
                f"the {self.max_bytes} byte limit; retry after a moment"
            )
        if self.max_rows is not None and waiting > self.max_rows:
            return f"queue full ({queued_rows} rows waiting); retry after a moment"
        return None


class Batcher:
    def __init__(
        self,
        model: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_queue_delay_s: float,
        admission: Admission,
        throughput: Throughput,
        stats: BatchStats | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ):
        """``timer`` measures the model's calls for ``throughput``; tests pass a fake clock."""
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.admission = admission
        self.throughput = throughput
        self.stats = stats or BatchStats()
        self.timer = timer
        self._jobs: deque[_Job] = deque()
        self._queued_rows = 0
        self._queued_bytes = 0
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
            raise ShuttingDown("the service is shutting down")
        refusal = self.admission.refusal(
            self._queued_rows, self._queued_bytes, rows, self.throughput.rows_per_s
        )
        if refusal is not None:
            self.stats.on_reject()
            raise Overloaded(refusal)
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._queued_rows += len(rows)
        self._queued_bytes += rows.nbytes
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

    def _dequeue(self) -> _Job:
        job = self._jobs.popleft()
        self._queued_rows -= len(job.rows)
        self._queued_bytes -= job.rows.nbytes
        return job

    def _take_batch(self) -> list[_Job]:
        batch: list[_Job] = []
        rows = 0
        while self._jobs:
            job = self._jobs[0]
            if job.future.done():  # cancelled by its request's timeout: drop its work
                self._dequeue()
                continue
            if batch and rows + len(job.rows) > self.max_batch_size:
                break
            batch.append(self._dequeue())
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
            # Only batches that work off a backlog tell how fast a queue drains: the small ones
            # run when nothing waits cost more per row and would make the estimate too low.
            backlog = len(rows) >= self.max_batch_size or bool(self._jobs)
            started = self.timer()
            try:
                output = await loop.run_in_executor(self._executor, self.model, rows)
            except Exception as exc:  # hand the model's failure to every waiting request
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            if backlog:
                self.throughput.observe(len(rows), self.timer() - started)
            start = 0
            for job in batch:
                end = start + len(job.rows)
                if not job.future.done():
                    job.future.set_result(output[start:end])
                start = end
