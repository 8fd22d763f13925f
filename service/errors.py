"""Domain errors and the one place that maps them to HTTP responses."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect

from service.transport.responses import NumpyJSONResponse

RETRY_AFTER_SECONDS = 1


class ServiceError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    status_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, object]:
        return {"detail": self.message}


class InvalidField(ServiceError):
    """A request field that is present but wrong: 422 naming the field, like FastAPI's own."""

    status_code = 422

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc = ("body", *loc)
        self.problem = message

    def body(self) -> dict[str, object]:
        return {"detail": [{"loc": list(self.loc), "msg": self.problem, "type": "value_error"}]}


class InvalidBody(ServiceError):
    """A body that is not a JSON object at all."""

    status_code = 400


class BodyTooLarge(ServiceError):
    status_code = 413


class RequestTimeout(ServiceError):
    """The client did not send its request in full within ``MADE_READ_TIMEOUT_S``."""

    status_code = 408


class ClientDisconnected(ServiceError):
    """The client went away before its body was read. Nobody receives this answer: its status,
    499 (nginx's "client closed request"), is what the request log and the metrics record."""

    status_code = 499


class UnsupportedMediaType(ServiceError):
    status_code = 415


class Unauthorized(ServiceError):
    """No or wrong API key; the header tells the client which scheme to use."""

    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status_code = 403


class ArtifactRejected(ServiceError):
    """A reload whose new artifact failed validation; the old model keeps serving."""

    status_code = 409


class Unavailable(ServiceError):
    """Overloaded, timed out, not ready or shutting down: try again shortly."""

    status_code = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


INTERNAL_ERROR = {"detail": "internal server error"}


def error_response(exc: ServiceError) -> NumpyJSONResponse:
    return NumpyJSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())


def install_error_handlers(app: FastAPI) -> None:
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
