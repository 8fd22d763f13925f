"""The app factory: settings in, a FastAPI app out; the engine loads in the lifespan handler."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.inference.engine import Engine
from service.inference.models import Startup, latest_first, prepare_startup, startup_of_engine
from service.inference.state import ServingState
from service.settings import Settings
from service.transport.auth import require_api_key
from service.transport.errors import install_error_handlers
from service.transport.hot_path import HotLikelihood
from service.transport.metrics import Metrics
from service.transport.request_log import RequestLogMiddleware
from service.transport.routes import admin, health, metrics, page, repository, v1, v2
from service.transport.schemas import ServedVersion, served_openapi

log = logging.getLogger("made_serve")


class ServiceApp(FastAPI):
    """FastAPI behind a front of plain ASGI layers: the request log (outermost, so it sees every
    response), CORS when configured, and the hot likelihood route. The front runs before
    FastAPI's own middleware, so the hot route's requests skip all of it."""

    front: ASGIApp
    served_document: tuple[object, dict[str, Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def behind_front(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself, where the front hands every request it does not answer."""
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document made true for the models in memory and the key (see
        ``service.transport.schemas.served_openapi``), built again only when they change."""
        state = self.state.serving
        default = state.engine.manifest if state.engine is not None else None
        models = [
            ServedVersion(name, model.version, model.engine.manifest, model is latest)
            for name, versions in state.models.items()
            if (latest := max(versions.values(), key=latest_first, default=None)) is not None
            for model in versions.values()
        ]
        key = (default, [(m.name, m.version, m.manifest) for m in models])
        if self.served_document is None or self.served_document[0] != key:
            document = served_openapi(super().openapi(), default, models, state.settings)
            self.served_document = (key, document)
        return self.served_document[1]


def create_app(
    settings: Settings | None = None, engine: Engine | None = None, startup: Startup | None = None
) -> ServiceApp:
    """Build the app; pass ``startup`` (made-serve, which loads the models to fail fast) or
    ``engine`` (tests) to serve models already loaded, else the lifespan loads them."""
    settings = settings or Settings()
    state = ServingState(settings=settings)
    observed = Metrics(state)

    state.batch_stats = observed.batch_stats

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if startup is not None:
            prepared = startup
        elif engine is not None:
            prepared = startup_of_engine(settings, engine)
        else:
            prepared = await anyio.to_thread.run_sync(prepare_startup, settings)
        await state.start(prepared)
        for model in prepared.models:
            log.info(
                "serving %s version %s (D=%d, K=%d)",
                model.name,
                model.version,
                model.engine.dim,
                model.engine.num_members,
                extra={"model": model.name, "model_version": model.version},
            )
        yield
        state.ready, state.not_ready_reason = False, "shutting down"
        await state.close()

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
    app.include_router(repository.router)
    # The page is open so it can load and then ask for the key its /v1 calls need.
    app.include_router(page.router)
    front: ASGIApp = HotLikelihood(app.behind_front, state, v1.LIKELIHOOD_ROUTES)
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
