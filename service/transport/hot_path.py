"""The hot route: plain ``POST /v1/log-likelihood`` requests answered at the ASGI level.

With many clients sending a row each, FastAPI's per-request machinery (its middleware layers,
routing, dependency solving, Request and Response objects) cost the event loop more than the
model cost its thread. A plain request -- JSON body holding only ``inputs``, rows of 0/1 digits,
within the limits, with the API key when one is set -- is decoded straight from the bytes and
answered here by the same data plane call as the route's (``service.inference.data_plane``), in
the same body (``service.transport.answers``). Anything else goes on to the FastAPI route with the
body replayed, so validation stays in one place; the route also keeps the OpenAPI entry.
"""

import time

import numpy as np
import orjson
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.inference import data_plane
from service.inference.engine import Engine
from service.inference.errors import ServiceError, UnknownModel
from service.inference.models import LoadedModel
from service.inference.state import ServingState
from service.transport.answers import likelihood_body
from service.transport.auth import header_matches
from service.transport.body import JSON, media_type
from service.transport.codec import rows_from_text, split_binary_inputs
from service.transport.errors import ClientDisconnected, error_response

PLAIN_REST = b'{"inputs":0}'  # the body once the rows are cut out, white space removed
WHITESPACE = b" \t\r\n"


class HotLikelihood:
    def __init__(self, app: ASGIApp, state: ServingState, routes: list[APIRoute]):
        """``routes``: the FastAPI log-likelihood routes this one runs ahead of, for the default
        model, a named one and a named version (``service.transport.routes.v1``); their path
        templates label the metrics."""
        self.app = app
        self.state = state
        self.default_route, self.named_route, self.version_route = routes
        self.prefix, self.suffix = self.named_route.path.split("{name}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = None
        if scope["type"] == "http" and scope["method"] == "POST" and self.state.ready:
            target = self.loaded_model(scope["path"])
        if target is None or not self.plain_headers(scope["headers"]):
            await self.app(scope, receive, send)
            return
        route, model = target
        model.last_used = time.monotonic()
        engine = model.engine
        scope["route"] = route  # labels even a request whose body never arrives
        state = scope.setdefault("state", {})
        state["model"], state["model_version"] = model.name, model.version
        try:
            raw = await read_all(receive)
        except ServiceError as exc:  # the client went away, or http_limits gave up on the body
            await error_response(exc)(scope, receive, send)
            return
        rows = plain_rows(raw, engine)
        if rows is None or len(rows) > self.state.settings.max_rows:
            await self.app(scope, replay(raw, receive), send)
            return
        state["rows"] = len(rows)
        try:
            answer = await data_plane.log_likelihood(self.state, engine, rows)
        except ServiceError as exc:
            await error_response(exc)(scope, receive, send)
            return
        body = orjson.dumps(likelihood_body(answer), option=orjson.OPT_SERIALIZE_NUMPY)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def loaded_model(self, path: str) -> tuple[APIRoute, LoadedModel] | None:
        """The route and the loaded model a log-likelihood path names; None for any other path
        and for a model not in memory (the route loads it, or says why not)."""
        if path == self.default_route.path:
            route, name, version = self.default_route, None, None
        elif path.startswith(self.prefix) and path.endswith(self.suffix):
            parts = path[len(self.prefix) : -len(self.suffix)].split("/")
            if len(parts) == 1 and parts[0]:
                route, name, version = self.named_route, parts[0], None
            elif len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
                route, name, version = self.version_route, parts[0], parts[2]
            else:
                return None
        else:
            return None
        try:
            model = self.state.loaded(name, version)
        except UnknownModel:  # no default model: the route says so
            return None
        return None if model is None else (route, model)

    def plain_headers(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """JSON with a declared length within the limit, and the API key when one is set."""
        declared = kind = authorization = None
        for name, value in headers:
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                kind = value
            elif name == b"authorization":
                authorization = value
        settings = self.state.settings
        return (
            kind is not None
            and media_type(kind.decode("latin-1")) == JSON
            and declared is not None
            and declared.isdigit()
            and int(declared) <= settings.max_body_bytes
            and (not settings.api_key or header_matches(_text(authorization), settings.api_key))
        )


def plain_rows(raw: bytes, engine: Engine) -> np.ndarray | None:
    """The body's rows when ``inputs`` is its only field and holds rows of 0/1 digits."""
    split = split_binary_inputs(raw)
    if split is None or split[1].translate(None, WHITESPACE) != PLAIN_REST:
        return None
    return rows_from_text(split[0], engine.dim, engine.manifest.image_shape)


async def read_all(receive: Receive) -> bytes:
    """The whole body (its length was checked against the limit)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected("the client disconnected before sending its body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(raw: bytes, receive: Receive) -> Receive:
    """A receive that hands over the already read body first, then defers to the real one."""
    pending = True

    async def again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return again


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
