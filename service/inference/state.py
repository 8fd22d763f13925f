"""What the data plane shares while the app runs: settings, the engine, the batcher, readiness."""

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio.to_thread
import numpy as np

from service.inference.batcher import (
    Admission,
    Batcher,
    BatchStats,
    Throughput,
    measured_rows_per_s,
)
from service.inference.engine import Engine
from service.inference.errors import NotReady, TimedOut
from service.settings import Settings

T = TypeVar("T")


@dataclass
class ServingState:
    settings: Settings
    engine: Engine | None = None
    batcher: Batcher | None = None
    ready: bool = False
    not_ready_reason: str = "starting"
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def require_engine(self) -> Engine:
        if self.engine is None or not self.ready:
            raise NotReady(f"model not ready: {self.not_ready_reason}")
        return self.engine

    async def bounded(self, work: Awaitable[T]) -> T:
        """Await work within the request timeout; past it the request has timed out."""
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await work
        except TimeoutError:
            raise TimedOut(
                f"request timed out after {self.settings.request_timeout_s:g} s"
            ) from None

    async def in_thread(self, work: Callable[..., T], *args: object) -> T:
        """Run blocking engine work in the worker threads (anyio's, as Starlette's routes use),
        within the request timeout."""
        return await self.bounded(anyio.to_thread.run_sync(work, *args))

    async def cancellable(self, work: Callable[..., T], *args: object) -> T:
        """Run engine work in a thread within the request timeout; once the request is answered
        (or timed out) the work is told to stop, so abandoned requests do not keep the CPU."""
        cancel = threading.Event()
        try:
            return await self.in_thread(functools.partial(work, cancel=cancel), *args)
        finally:
            cancel.set()

    async def member_log_probs(self, rows: np.ndarray, engine: Engine | None = None) -> np.ndarray:
        """[B, K] member log-likelihoods, through the batcher when it is on.

        ``engine`` is the one the rows were decoded for; after a reload it may be the old one,
        which then finishes the request itself instead of the new model's batcher.
        """
        current = self.require_engine()
        engine = engine or current
        batcher = self.batcher
        if batcher is not None and engine is current:
            return await self.bounded(batcher.submit(rows))
        return await self.in_thread(engine.member_log_probs, rows)

    async def start_batcher(self, engine: Engine, stats: BatchStats) -> Batcher:
        """A running batcher for ``engine``. Its rows/s is measured first on one full batch, so
        admission has a figure for this model before any request ran."""
        settings = self.settings
        rng = np.random.default_rng(0)
        rows = (rng.random((settings.max_batch_size, engine.dim)) < 0.5).astype(np.float32)
        rows_per_s = await anyio.to_thread.run_sync(
            measured_rows_per_s, engine.member_log_probs, rows
        )
        batcher = Batcher(
            engine.member_log_probs,
            settings.max_batch_size,
            settings.max_queue_delay_ms / 1000,
            Admission(
                settings.request_timeout_s, settings.max_queue_bytes, settings.max_queue_rows
            ),
            Throughput(rows_per_s, rows=settings.max_batch_size),
            stats,
        )
        batcher.start()
        return batcher

    async def swap_engine(self, engine: Engine) -> None:
        """Serve ``engine`` from now on; rows already queued finish on the old model."""
        old = self.batcher
        if old is not None:
            self.batcher = await self.start_batcher(engine, old.stats)
        self.engine = engine  # no await between the two assignments: the switch is atomic
        if old is not None:
            await old.close()
