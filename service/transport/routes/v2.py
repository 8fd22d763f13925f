"""The Open Inference Protocol (KServe V2 REST) next to /v1: health, metadata and inference.

Models are the repository's (``service.inference.repository``): a version is its folder's number,
or for an unversioned artifact the first 12 hex digits of its ONNX sha256; without
``/versions/{version}`` the latest loaded version answers. Input ``x`` [B, D] of 0/1 values; output
``log_likelihood`` [B] FP64, the mixture's log p(x) in nats, computed as /v1 does. Either may be
binary data (the binary tensor data extension); a body without a Content-Type is JSON, as the
protocol's clients (tritonclient) expect.
"""

from collections.abc import Awaitable, Callable
from importlib.metadata import version as package_version

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from service.inference import data_plane
from service.inference.errors import ServiceError
from service.inference.models import LoadedModel, latest_first
from service.transport.app_state import serving_state
from service.transport.body import JSON, read_body
from service.transport.errors import V2_PREFIX, ModelNotReady, protocol_error_response
from service.transport.inference_protocol import (
    BINARY_EXTENSION,
    HEADER_LENGTH,
    INPUT,
    INPUT_DATATYPE,
    OCTET_STREAM,
    OUTPUT,
    OUTPUT_DATATYPE,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ProtocolErrorBody,
    ServerMetadata,
    binary_output,
    binary_response,
    input_rows,
    log_likelihood_output,
    parse_request,
)
from service.transport.responses import NumpyJSONResponse

PLATFORM = "onnxruntime_onnx"
REPOSITORY_EXTENSION = "model_repository"  # service.transport.routes.repository
# JSON, or none (the protocol's default), or a binary tensor body labelled as such.
MEDIA_TYPES = (JSON, "", OCTET_STREAM)
ERRORS = {
    code: {"model": ProtocolErrorBody, "description": text}
    for code, text in (
        (400, "The request breaks the protocol or the model's input contract."),
        (401, "MADE_API_KEY is set and the request lacks it."),
        (404, "No such model or version."),
        (413, "Body too large."),
        (415, "Neither application/json, application/octet-stream nor no Content-Type."),
        (503, "Not ready, overloaded or timed out; retry."),
    )
}


class ProtocolRoute(APIRoute):
    """Every error on these routes, the service's shared ones too, in the protocol's body."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return protocol_error_response(exc)

        return handle


health_router = APIRouter(prefix=V2_PREFIX, tags=["v2"], route_class=ProtocolRoute)
router = APIRouter(prefix=f"{V2_PREFIX}/models", tags=["v2"], route_class=ProtocolRoute)


async def served_model(request: Request, name: str, version: str | None) -> LoadedModel:
    """The model ``name`` (its latest loaded version, or ``version``), loaded on demand."""
    model = await serving_state(request).model(name, version)
    request.state.model, request.state.model_version = model.name, model.version
    return model


def loaded_model(request: Request, name: str, version: str | None) -> LoadedModel:
    """For readiness: the model when it is in memory now (a probe loads nothing)."""
    state = serving_state(request)
    state.require_ready()
    model = state.loaded(name, version)
    if model is None:
        state.repository_version(name, version)  # UnknownModel for what the repository lacks
        raise ModelNotReady(
            f"model {name!r} is not loaded: load it with POST /v2/repository/models/{name}/load"
        )
    return model


@health_router.get("", response_model=ServerMetadata, responses={400: ERRORS[400]})
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(
        name="made-serve",
        version=package_version("made-serve"),
        extensions=[BINARY_EXTENSION, REPOSITORY_EXTENSION],
    )


@health_router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """200 while the process serves HTTP (Kubernetes liveness)."""
    return {"live": True}


@health_router.get("/health/ready", responses={503: ERRORS[503]})
async def server_ready(request: Request) -> dict[str, bool]:
    """200 once the model serves, 503 before that and while shutting down (readiness)."""
    serving_state(request).require_engine()
    return {"ready": True}


def inline_schema(model: type[BaseModel]) -> dict:
    """``model``'s JSON schema with its ``$defs`` written out in place: an OpenAPI operation's own
    schema cannot refer to them."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: object) -> object:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)


BINARY_BODY = (
    f"the binary tensor data extension's body: JSON as long as the {HEADER_LENGTH} header says, "
    "then the tensors its parameters.binary_data_size announce, raw and little-endian."
)
READY = {
    "responses": {
        404: ERRORS[404],
        409: {"model": ProtocolErrorBody, "description": "Not loaded: not ready."},
        503: ERRORS[503],
    }
}
INFER = {
    "response_model": InferenceResponse,
    "responses": {
        200: {
            "description": f"JSON, or with a binary output: {BINARY_BODY}",
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        },
        **ERRORS,
    },
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": f"JSON (Content-Type application/json or none), or: {BINARY_BODY}",
            "content": {JSON: {"schema": inline_schema(InferenceRequest)}},
        }
    },
}


def metadata(request: Request, model: LoadedModel) -> ModelMetadata:
    loaded = serving_state(request).models.get(model.name, {})
    engine = model.engine
    return ModelMetadata(
        name=model.name,
        versions=sorted(loaded, key=lambda v: latest_first(loaded[v])),
        platform=PLATFORM,
        inputs=[{"name": INPUT, "datatype": INPUT_DATATYPE, "shape": [-1, engine.dim]}],
        outputs=[{"name": OUTPUT, "datatype": OUTPUT_DATATYPE, "shape": [-1]}],
        parameters=None
        if engine.manifest.dimensions is None
        else {"dimensions": [d.model_dump(exclude_none=True) for d in engine.manifest.dimensions]},
    )


async def log_likelihoods(request: Request, model: LoadedModel) -> Response:
    """The body's rows -> the protocol's response with their mixture log p(x) in nats."""
    state = serving_state(request)
    engine = model.engine
    raw = await read_body(request, state.settings.max_body_bytes, MEDIA_TYPES)
    body, binary = parse_request(raw, request.headers.get(HEADER_LENGTH))
    binary_out = binary_output(body)
    rows = input_rows(body, binary, engine.dim, state.settings.max_rows, engine.schema)
    request.state.rows = len(rows)
    log_likelihood = (await data_plane.log_likelihood(state, engine, rows)).log_likelihood
    fields = {
        "model_name": model.name,
        "model_version": model.version,
        # The protocol echoes the request's id; without one, the X-Request-ID stands in.
        "id": body.id if body.id is not None else request.state.request_id,
    }
    if binary_out:
        content, header_length = binary_response(fields, log_likelihood)
        headers = {HEADER_LENGTH: str(header_length)}
        return Response(content, media_type=OCTET_STREAM, headers=headers)
    return NumpyJSONResponse({**fields, "outputs": [log_likelihood_output(log_likelihood)]})


@health_router.get("/models/{name}/ready", **READY)
async def model_ready(request: Request, name: str) -> dict:
    loaded_model(request, name, None)
    return {"name": name, "ready": True}


@health_router.get("/models/{name}/versions/{version}/ready", **READY)
async def model_version_ready(request: Request, name: str, version: str) -> dict:
    loaded_model(request, name, version)
    return {"name": name, "ready": True}


@router.get("/{name}", response_model=ModelMetadata, responses=ERRORS)
async def model_metadata(request: Request, name: str) -> ModelMetadata:
    return metadata(request, await served_model(request, name, None))


@router.get("/{name}/versions/{version}", response_model=ModelMetadata, responses=ERRORS)
async def model_version_metadata(request: Request, name: str, version: str) -> ModelMetadata:
    return metadata(request, await served_model(request, name, version))


@router.post("/{name}/infer", **INFER)
async def infer(request: Request, name: str) -> Response:
    """log p(x) of each row of ``x`` under the mixture, in nats (exact; no missing entries)."""
    return await log_likelihoods(request, await served_model(request, name, None))


@router.post("/{name}/versions/{version}/infer", **INFER)
async def version_infer(request: Request, name: str, version: str) -> Response:
    """As ``infer``, for an explicit version."""
    return await log_likelihoods(request, await served_model(request, name, version))
