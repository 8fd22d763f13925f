"""The Open Inference Protocol's model repository extension (admin key): index, load, unload.

Loading validates the model's latest version exactly as start-up does; an unsound one is refused
(409) and whatever served before keeps serving. A load swaps atomically: requests in flight finish
on the version they started on. Unloading stops a model's every version (its queued rows finish).
"""

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from service.contract.artifact import ArtifactError
from service.inference.index import repository_index
from service.transport.app_state import serving_state
from service.transport.auth import require_admin_key
from service.transport.body import parse_body, read_body
from service.transport.errors import V2_PREFIX, ArtifactRejected
from service.transport.inference_protocol import PROTOCOL_ERRORS, ProtocolErrorBody
from service.transport.routes.v2 import ERRORS, MEDIA_TYPES, ProtocolRoute

router = APIRouter(
    prefix=f"{V2_PREFIX}/repository",
    tags=["v2"],
    route_class=ProtocolRoute,
    dependencies=[Depends(require_admin_key)],
)
ADMIN_ERRORS = {
    **ERRORS,
    403: {"model": ProtocolErrorBody, "description": "No MADE_API_KEY configured."},
}


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ready: bool = Field(False, description="Only the versions that serve now.")


class IndexEntry(BaseModel):
    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str


class LoadParameters(BaseModel):
    """Triton's load may override a model's configuration or files; made-serve loads only what
    the repository holds, so it takes no parameters."""

    model_config = ConfigDict(extra="forbid")


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: LoadParameters = Field(default_factory=LoadParameters)


class UnloadParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unload_dependents: bool = Field(False, description="A MADE model has no dependents.")


class UnloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: UnloadParameters = Field(default_factory=UnloadParameters)


async def read_optional_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """An empty body (tritonclient's index request sends none) means every default."""
    raw = await read_body(request, serving_state(request).settings.max_body_bytes, MEDIA_TYPES)
    return parse_body(raw or b"{}", model, PROTOCOL_ERRORS)


@router.post("/index", response_model=list[IndexEntry], responses=ADMIN_ERRORS)
async def index(request: Request) -> list[IndexEntry]:
    """Every model version in the repository, READY when it serves, else why not."""
    body = await read_optional_body(request, IndexRequest)
    state = serving_state(request)
    state.require_ready()
    entries = await state.in_thread(repository_index, state)
    return [
        IndexEntry(name=e.name, version=e.version, state=e.state, reason=e.reason)
        for e in entries
        if e.state == "READY" or not body.ready
    ]


@router.post(
    "/models/{name}/load",
    responses={
        **ADMIN_ERRORS,
        409: {"model": ProtocolErrorBody, "description": "Unsound: the old version serves."},
    },
)
async def load(request: Request, name: str) -> dict:
    """Load (or load again) the model's latest version and serve it in place of the old ones."""
    await read_optional_body(request, LoadRequest)
    state = serving_state(request)
    state.require_ready()
    try:
        wanted = state.repository_version(name, None)
        request.state.model = name  # a name the repository holds: a bounded label
        model = await state.load(wanted, replace=True)
    except ArtifactError as exc:
        raise ArtifactRejected(
            f"{name} not loaded, what served before still serves: {exc}"
        ) from None
    request.state.model_version = model.version
    return {}


@router.post("/models/{name}/unload", responses=ADMIN_ERRORS)
async def unload(request: Request, name: str) -> dict:
    """Stop serving every version of the model (a request for it later loads it again when
    MADE_LOAD_ON_DEMAND is on)."""
    await read_optional_body(request, UnloadRequest)
    state = serving_state(request)
    state.require_ready()
    if name not in state.models and state.repository is not None:
        state.repository.folder(name)  # 404 for a model the repository does not hold
    request.state.model = name
    await state.unload(name)
    return {}
