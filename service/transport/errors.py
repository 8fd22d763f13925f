"""HTTP's own refusals, and the one place every error becomes a status code and a body.

The data plane raises ``service.inference.errors`` kinds, which know nothing of HTTP; the
transport adds those below. ``STATUS`` gives each kind its code; /v1 (and the hot route) answer
``{"detail": ...}`` as FastAPI does, /v2 the Open Inference Protocol's ``{"error": ...}``.
"""

from collections.abc import Mapping

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service.inference.errors import InvalidField, ServiceError, Unavailable, UnknownModel
from service.transport.responses import NumpyJSONResponse

RETRY_AFTER_SECONDS = 1
V2_PREFIX = "/v2"


class InvalidBody(ServiceError):
    """A body that is not a JSON object at all."""


class BodyTooLarge(ServiceError):
    """Declared or sent past ``MADE_MAX_BODY_BYTES``."""


class RequestTimeout(ServiceError):
    """The client did not send its request in full within ``MADE_READ_TIMEOUT_S``."""


class ClientDisconnected(ServiceError):
    """The client went away before its body was read. Nobody receives this answer: its status,
    499 (nginx's "client closed request"), is what the request log and the metrics record."""


class UnsupportedMediaType(ServiceError):
    """A Content-Type the route does not read."""


class Unauthorized(ServiceError):
    """No or wrong API key; the answer's header tells the client which scheme to use."""


class Forbidden(ServiceError):
    """Admin routes without a configured key."""


class ArtifactRejected(ServiceError):
    """A reload whose new artifact failed validation; the old model keeps serving."""


class ModelNotReady(ServiceError):
    """A readiness probe for a model the repository holds but has not loaded: the model's state,
    not the request, is what is wrong, and a probe loads nothing."""


class ProtocolError(ServiceError):
    """A request the Open Inference Protocol (or the model's input contract under it) rejects."""


STATUS: dict[type[ServiceError], int] = {
    InvalidField: 422,
    Unavailable: 503,
    InvalidBody: 400,
    BodyTooLarge: 413,
    RequestTimeout: 408,
    ClientDisconnected: 499,
    UnsupportedMediaType: 415,
    Unauthorized: 401,
    Forbidden: 403,
    ArtifactRejected: 409,
    ModelNotReady: 409,
    ProtocolError: 400,
    UnknownModel: 404,
}
INTERNAL_ERROR = {"detail": "internal server error"}


def status_of(exc: ServiceError) -> int:
    """The code of ``exc``'s nearest kind in ``STATUS``; 500 for a kind nobody mapped (a bug)."""
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def headers_of(exc: ServiceError) -> dict[str, str]:
    if isinstance(exc, Unavailable):
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def error_response(exc: ServiceError) -> NumpyJSONResponse:
    """The v1 answer: FastAPI's validation shape for a field, ``{"detail": message}`` otherwise
    (a protocol error keeps the protocol's body wherever it is raised)."""
    if isinstance(exc, ProtocolError):
        return protocol_error_response(exc)
    if isinstance(exc, InvalidField):
        detail = [{"loc": ["body", *exc.loc], "msg": exc.problem, "type": "value_error"}]
        body: dict[str, object] = {"detail": detail}
    else:
        body = {"detail": exc.message}
    return NumpyJSONResponse(body, status_code=status_of(exc), headers=headers_of(exc))


def protocol_error_response(exc: ServiceError) -> NumpyJSONResponse:
    """The V2 answer: ``{"error": message}``; the protocol has no 422, a bad field is a 400."""
    status = status_of(exc)
    return protocol_error(exc.message, 400 if status == 422 else status, headers_of(exc))


def protocol_error(message: str, status: int, headers: Mapping[str, str] | None) -> Response:
    return NumpyJSONResponse({"error": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI's handlers for what routes raise (the V2 routes catch theirs first, see
    ``service.transport.routes.v2.ProtocolRoute``)."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> NumpyJSONResponse:
        return error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(_: Request, exc: ClientDisconnect) -> NumpyJSONResponse:
        """Starlette's request stream saw the client go: not a server error, and no traceback."""
        return error_response(ClientDisconnected("the client disconnected before sending its body"))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> NumpyJSONResponse:
        """A bug: JSON like every other error; the traceback still reaches the server log."""
        return NumpyJSONResponse(INTERNAL_ERROR, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> NumpyJSONResponse:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return NumpyJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def no_such_route(request: Request, exc: HTTPException) -> Response:
        """A path or method no route serves (404, 405): the protocol's body under /v2, FastAPI's
        own elsewhere."""
        path = request.url.path
        if path == V2_PREFIX or path.startswith(f"{V2_PREFIX}/"):
            return protocol_error(exc.detail, exc.status_code, exc.headers)
        return await http_exception_handler(request, exc)
