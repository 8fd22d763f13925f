"""Liveness and readiness probes."""

from fastapi import APIRouter, Request

from service.transport.app_state import serving_state
from service.transport.responses import NumpyJSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready; the body says why."}})
async def readyz(request: Request) -> NumpyJSONResponse:
    """200 once the model is loaded and warmed up; 503 before that and once shutdown begins."""
    state = serving_state(request)
    if state.ready:
        return NumpyJSONResponse({"status": "ready"})
    return NumpyJSONResponse(
        {"status": "not ready", "reason": state.not_ready_reason},
        status_code=503,
        headers={"Retry-After": "1"},
    )
