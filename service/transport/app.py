"""The app factory: settings in, a FastAPI app out; the engine loads in the lifespan handler."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.contract.artifact import Manifest
from service.inference.engine import Engine
from service.inference.memory import release_free_heap
from service.inference.state import ServingState
from service.settings import Settings
from service.transport.auth import require_api_key
from service.transport.errors import install_error_handlers
from service.transport.hot_path import HotLikelihood
from service.transport.metrics import Metrics
from service.transport.request_log import RequestLogMiddleware
from service.transport.routes import admin, health, metrics, page, v1, v2
from service.transport.schemas import served_openapi

log = logging.getLogger("made_serve")


def warm_up(engine: Engine, max_batch_size: int) -> None:
    """Run every code path once so the first request does not pay for lazy initialisation."""
    rng = np.random.default_rng(0)
    rows = (rng.random((max_batch_size, engine.dim)) < 0.5).astype(np.float32)
    engine.member_log_probs(rows[:1])
    engine.member_log_probs(rows)
    engine.log_likelihood(rows[:2], per_dimension=True)
    engine.sample(2, rng)
    release_free_heap()


class ServiceApp(FastAPI):
    """FastAPI behind a front of plain ASGI layers: the request log (outermost, so it sees every
    response), CORS when configured, and the hot likelihood route. The front runs before
    FastAPI's own middleware, so the hot route's requests skip all of it."""

    front: ASGIApp
    served_document: tuple[Manifest | None, dict[str, Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def behind_front(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself, where the front hands every request it does not answer."""
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document made true for the model served now and the key (see
        ``service.transport.schemas.served_openapi``), built again only when a reload changes the
        model."""
        state = self.state.serving
        manifest = state.engine.manifest if state.engine is not None else None
        if self.served_document is None or self.served_document[0] is not manifest:
            document = served_openapi(super().openapi(), manifest, state.settings)
            self.served_document = (manifest, document)
        return self.served_document[1]


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> ServiceApp:
    """Build the app; pass ``engine`` to serve an already loaded model (tests do)."""
    settings = settings or Settings()
    state = ServingState(settings=settings)
    observed = Metrics(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.engine = engine or Engine.load(settings.model_dir, settings.onnx_threads())
        warm_up(state.engine, settings.max_batch_size)
        if settings.batching:
            state.batcher = await state.start_batcher(state.engine, observed.batch_stats())
        state.ready = True
        log.info(
            "serving %s (D=%d, K=%d)",
            state.engine.manifest.name,
            state.engine.dim,
            state.engine.num_members,
        )
        yield
        state.ready, state.not_ready_reason = False, "shutting down"
        if state.batcher is not None:
            await state.batcher.close()

    app = ServiceApp(
        title="made-serve",
        version="0.1.0",
        summary="Likelihoods, completions and samples from a MADE mixture.",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.state.metrics = observed
    install_error_handlers(app)
    # Health (and metrics) stay open for probes; everything else is mounted behind the key.
    # Without a key there is nothing to check, so the hot routes carry no dependency at all.
    keyed = [Depends(require_api_key)] if settings.api_key else []
    # The hot route's router first: requests are matched against routes in order.
    app.include_router(v1.router, dependencies=keyed)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(v2.health_router)
    app.include_router(v2.router, dependencies=keyed)
    app.include_router(admin.router)
    # The page is open so it can load and then ask for the key its /v1 calls need.
    app.include_router(page.router)
    hot_route = next(route for route in v1.router.routes if route.endpoint is v1.log_likelihood)
    front: ASGIApp = HotLikelihood(app.behind_front, state, hot_route)
    if settings.cors_origins:
        front = CORSMiddleware(
            front,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.front = RequestLogMiddleware(front, metrics=observed)
    return app
