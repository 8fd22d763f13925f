"""What the data plane shares while the app runs: settings, the loaded models, readiness.

Every loaded model version has its own engine (onnxruntime session, sampler) and, with batching,
its own batcher. Loading validates an artifact as start-up does and swaps it in atomically:
requests already holding the old engine finish on it.
"""

import asyncio
import functools
import logging
import threading
import time
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
from service.inference.errors import ModelNotLoaded, NotReady, TimedOut, UnknownModel
from service.inference.limits import server_limits
from service.inference.models import LoadedModel, Startup, latest_first, read_model
from service.inference.repository import ArtifactVersion, Repository, content_version
from service.settings import Settings

T = TypeVar("T")
log = logging.getLogger("made_serve")


@dataclass
class ServingState:
    settings: Settings
    repository: Repository | None = None
    # name -> version -> the loaded model; a name's latest version answers when none is asked.
    models: dict[str, dict[str, LoadedModel]] = field(default_factory=dict)
    # MADE_DEFAULT_MODEL, or the repository's only model at start; None: the plain routes say so.
    default_model: str | None = None
    batchers: dict[Engine, Batcher] = field(default_factory=dict)
    ready: bool = False
    not_ready_reason: str = "starting"
    threads: int = 1  # each session's intra-op threads (Settings.threads_per_model)
    batch_stats: Callable[[str], BatchStats] = lambda name: BatchStats()
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def with_engine(cls, settings: Settings, engine: Engine, ready: bool = True) -> "ServingState":
        """A state serving ``engine`` alone, without a batcher (tests drive the data plane)."""
        name = engine.manifest.name
        state = cls(settings=settings, ready=ready, default_model=name)
        version = content_version(engine.manifest)
        model = LoadedModel(name, version, settings.model_dir, engine, server_limits(settings))
        state.models[name] = {version: model}
        return state

    # -- which model ---------------------------------------------------------------------------
    def default_name(self) -> str:
        """The model the plain /v1 routes answer for."""
        if self.default_model is not None:
            return self.default_model
        names = self.repository.names() if self.repository is not None else list(self.models)
        raise UnknownModel(
            f"this server holds {len(names)} models ({', '.join(names)}) and no default: ask "
            "/v1/models/{name}/..., or set MADE_DEFAULT_MODEL"
        )

    def loaded(self, name: str | None = None, version: str | None = None) -> LoadedModel | None:
        """The loaded model asked for, without loading anything; None when it is not loaded."""
        versions = self.models.get(name if name is not None else self.default_name())
        if not versions:
            return None
        if version is None:
            return max(versions.values(), key=latest_first)
        return versions.get(version)

    def require_ready(self) -> None:
        if not self.ready:
            raise NotReady(f"model not ready: {self.not_ready_reason}")

    async def model(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The model a request asks for (the default one when it names none), loaded first when
        it is in the repository but not in memory and MADE_LOAD_ON_DEMAND is on."""
        self.require_ready()
        found = self.loaded(name, version)
        if found is None:
            name = name if name is not None else self.default_name()
            wanted = self.repository_version(name, version)
            if not self.settings.load_on_demand:
                raise ModelNotLoaded(
                    f"model {name!r} is not loaded; load it with "
                    f"POST /v2/repository/models/{name}/load"
                )
            found = await self.load(wanted, replace=False)
        found.last_used = time.monotonic()
        return found

    @property
    def engine(self) -> Engine | None:
        """The default model's engine, when it is loaded."""
        try:
            found = self.loaded()
        except UnknownModel:
            return None
        return found.engine if found is not None else None

    def require_engine(self) -> Engine:
        self.require_ready()
        engine = self.engine
        if engine is None:
            raise NotReady(f"model not ready: {self.not_ready_reason}")
        return engine

    def repository_version(self, name: str, version: str | None) -> ArtifactVersion:
        """The version on disk a request names (UnknownModel when the repository lacks it)."""
        if self.repository is None:
            raise UnknownModel("this server has no model repository")
        return self.repository.version(name, version)

    # -- running work --------------------------------------------------------------------------
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

    async def member_log_probs(self, rows: np.ndarray, engine: Engine) -> np.ndarray:
        """[B, K] member log-likelihoods, through ``engine``'s batcher when it has one.

        ``engine`` is the one the rows were decoded for; once it is swapped out or unloaded its
        batcher is gone and it finishes the request itself, in a thread.
        """
        batcher = self.batchers.get(engine)
        if batcher is not None:
            return await self.bounded(batcher.submit(rows))
        return await self.in_thread(engine.member_log_probs, rows)

    # -- loading and unloading -------------------------------------------------------------------
    async def start_batcher(self, model: LoadedModel) -> Batcher:
        """A running batcher for ``model``, within its limits. Its rows/s is measured first on one
        full batch, so admission has a figure for this model before any request ran."""
        engine, limits = model.engine, model.limits
        rng = np.random.default_rng(0)
        rows = (rng.random((limits.max_batch_size, engine.dim)) < 0.5).astype(np.float32)
        rows_per_s = await anyio.to_thread.run_sync(
            measured_rows_per_s, engine.member_log_probs, rows
        )
        batcher = Batcher(
            engine.member_log_probs,
            limits.max_batch_size,
            limits.max_queue_delay_ms / 1000,
            Admission(
                self.settings.request_timeout_s, limits.max_queue_bytes, limits.max_queue_rows
            ),
            Throughput(rows_per_s, rows=limits.max_batch_size),
            self.batch_stats(model.name),
        )
        batcher.start()
        return batcher

    async def load(
        self, wanted: ArtifactVersion, replace: bool = True, supersedes: str | None = None
    ) -> LoadedModel:
        """Load ``wanted`` and serve it. ``replace``: it becomes the model's only loaded version
        (the repository API's load, a reload); otherwise it joins the loaded ones (a request for
        a version not in memory). ``supersedes``: the model name it replaces when that differs
        (``--model``'s reload of an artifact named otherwise). Past MADE_MAX_LOADED_MODELS the
        least recently used other models are unloaded first."""
        async with self.load_lock:
            current = self.models.get(wanted.name, {})
            for model in current.values():  # asked again while it loaded for someone else
                if model.directory == wanted.directory and not replace:
                    return model
            model = await anyio.to_thread.run_sync(read_model, wanted, self.threads, self.settings)
            await self.install(model, replace, supersedes or model.name)
        log.info(
            "loaded %s version %s (D=%d, K=%d) from %s",
            model.name,
            model.version,
            model.engine.dim,
            model.engine.num_members,
            model.directory,
            extra={"model": model.name, "model_version": model.version},
        )
        return model

    async def install(self, model: LoadedModel, replace: bool, old_name: str) -> None:
        """Serve ``model`` from now on; the versions it supersedes go once it serves (their
        queued rows finish first)."""
        batcher = None
        if self.settings.batching:
            batcher = await self.start_batcher(model)
        held = self.models.get(old_name, {}).values()
        superseded = [m for m in held if replace or m.version == model.version]
        await self._make_room(superseded)
        # No await from here to the end of the swap: a request sees the old set or the new one.
        if batcher is not None:
            self.batchers[model.engine] = batcher
        versions = {} if replace else dict(self.models.get(model.name, {}))
        versions[model.version] = model
        self.models.pop(old_name, None)
        self.models[model.name] = versions
        if self.default_model == old_name:
            self.default_model = model.name
        if self.repository is not None and self.repository.root is None:
            # --model: the served artifact's manifest names the model, and reload may move it.
            folders = {k: v for k, v in self.repository.fixed.items() if k != old_name}
            self.repository = Repository(folders={**folders, model.name: model.directory})
        for old in superseded:
            await self._retire(old)

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name``; its queued rows finish first."""
        async with self.load_lock:
            for model in list(self.models.pop(name, {}).values()):
                await self._retire(model)

    async def _make_room(self, leaving: list[LoadedModel]) -> None:
        """Unload least recently used versions until one more fits the budget beside those that
        stay (``leaving`` go anyway)."""
        budget = self.settings.max_loaded_models
        if budget is None:
            return
        held = [m for versions in self.models.values() for m in versions.values()]
        staying = [m for m in held if m not in leaving]
        while len(staying) + 1 > budget and staying:
            oldest = min(staying, key=lambda m: m.last_used)
            staying.remove(oldest)
            versions = self.models[oldest.name]
            del versions[oldest.version]
            if not versions:
                del self.models[oldest.name]
            log.info(
                "unloaded %s version %s to make room (MADE_MAX_LOADED_MODELS=%d)",
                oldest.name,
                oldest.version,
                budget,
                extra={"model": oldest.name, "model_version": oldest.version},
            )
            await self._retire(oldest)

    async def _retire(self, model: LoadedModel) -> None:
        batcher = self.batchers.pop(model.engine, None)
        if batcher is not None:
            await batcher.close()

    async def start(self, startup: Startup) -> None:
        """Serve the startup models; ready once they all do."""
        self.repository, self.threads = startup.repository, startup.threads
        names = startup.repository.names()
        self.default_model = self.settings.default_model or (names[0] if len(names) == 1 else None)
        for model in startup.models:
            await self.install(model, replace=True, old_name=model.name)
        self.ready = True

    async def close(self) -> None:
        """Shut every batcher down (their queued rows finish first)."""
        for batcher in list(self.batchers.values()):
            await batcher.close()
        self.batchers.clear()
