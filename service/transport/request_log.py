"""One JSON log line and the request metrics per request, and the X-Request-ID header.

Pure ASGI middleware (not BaseHTTPMiddleware, which runs every request through extra tasks and
queues): it sits on the hot path of every call.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson

from service.inference.errors import ShuttingDown
from service.transport.errors import INTERNAL_ERROR, error_response
from service.transport.metrics import Metrics, method_label

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID = 128
INTERNAL_ERROR_BODY = orjson.dumps(INTERNAL_ERROR)
UNMATCHED_ROUTE = "unmatched"  # one label for every unknown path, so 404 scans cannot add series

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("made_serve.access")
# Attributes every LogRecord has; anything else on a record came from ``extra`` and is logged
# (except uvicorn's terminal-coloured copy of its message).
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """Each record as one JSON object: time, level, logger, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str) -> dict[str, object]:
    """dictConfig for JSON lines on stderr, for this package and uvicorn alike.

    Given to uvicorn as its ``log_config``, so every worker process applies it too.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


def accepted_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's X-Request-ID when it is printable ASCII of at most 128 characters."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            ok = 0 < len(text) <= MAX_REQUEST_ID and text.isascii() and text.isprintable()
            return text if ok else None
    return None


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v2/models/{name}/infer``), set by the router."""
    route = scope.get("route")
    return getattr(route, "path", UNMATCHED_ROUTE)


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = accepted_request_id(scope["headers"])
        if request_id is None:
            # A correlation id, not a secret: the fast PRNG avoids a getrandom call per request.
            request_id = f"{random.getrandbits(128):032x}"  # nosec B311
        # Routes read it as request.state.request_id and may set request.state.rows.
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        method = method_label(scope["method"])
        in_progress = self.metrics.request_started(method)
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the shutdown grace is over: the client may
            # retry elsewhere, as when overloaded.
            if status == 0:
                shutting_down = ShuttingDown("the service is shutting down; retry")
                await error_response(shutting_down)(scope, receive, send_with_id)
            raise
        except Exception:
            if status == 0:  # answer here, so even this response carries the request id
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": INTERNAL_ERROR_BODY})
            raise
        finally:
            in_progress.dec()
            seconds = time.perf_counter() - start
            route = route_template(scope)
            model = state.get("model", "")
            self.metrics.observe_request(route, method, status or 500, seconds, model)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": route,
                        "path": scope["path"],
                        "status": status or 500,
                        "duration_ms": round(seconds * 1000, 3),
                        "rows": state.get("rows"),
                        "model": model or None,
                        "model_version": state.get("model_version"),
                    },
                )
