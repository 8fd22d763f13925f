"""The limits on reading a request that uvicorn's HTTP/1.1 protocol lacks: header size, read time.

With httptools (uvicorn's choice when it is installed, as ``uvicorn[standard]`` does) uvicorn
bounds neither: a header is buffered whole however large (httptools joins a value's pieces before
it hands the header over), and a client that trickles its request, or connects and sends nothing,
holds its connection for ever (``timeout_keep_alive`` only runs between requests). h11 has
``h11_max_incomplete_event_size`` for the headers and no read timeout either. This is uvicorn's
httptools protocol with both limits:

- header bytes are counted as they arrive, before the parser sees them: past ``max_header_bytes``
  the client gets 431 and the connection closes;
- a request must arrive in full within ``read_timeout_s`` of its first byte (of the connection's
  opening, for its first request): with its headers incomplete the client gets 408 and the
  connection closes; with its body incomplete the app's waiting ``receive()`` raises
  ``RequestTimeout``, so the app answers the 408 itself (logged and counted like any answer),
  and the connection closes after it;
- a body the parser cannot read (a bad chunk size) goes the same way with ``InvalidBody``, 400,
  where uvicorn would answer its own 400 behind the app, which then saw a disconnect.

Per request this is a few attribute updates and one wrapped ``receive``; the deadline is one timer
per connection that fires once per ``read_timeout_s`` at most.
"""

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn._types import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    Scope,
)
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from service.inference.errors import ServiceError
from service.settings import Settings
from service.transport.errors import InvalidBody, RequestTimeout


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on header bytes and a deadline to read requests."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_header_bytes: int,
        read_timeout_s: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = max_header_bytes
        self.read_timeout_s = read_timeout_s
        self.header_bytes = 0  # received for the request being read while its headers were not
        self.reading_body = False  # its headers are complete, its body is not
        self.read_since: float | None = None  # when reading it began; None between requests
        self.deadline: asyncio.TimerHandle | None = None  # the timer that checks read_since
        # A body given up on: its request's receive() raises the error, the rest is ignored.
        self.failed_body: tuple[RequestResponseCycle, ServiceError] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.read_since = self.loop.time()
        self.deadline = self.loop.call_later(self.read_timeout_s, self.check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.failed_body is not None:
            return
        if self.reading_body:
            super().data_received(data)
            return
        room = self.max_header_bytes - self.header_bytes
        if len(data) <= room:
            self.header_bytes += len(data)
            super().data_received(data)
            return
        # Feed only what the headers may still take; if they end within it, the rest is body
        # (or a next request) and is read as usual.
        view = memoryview(data)
        self.header_bytes = self.max_header_bytes
        super().data_received(view[:room])
        if self.transport.is_closing():
            return
        if self.reading_body or self.header_bytes < self.max_header_bytes:
            self.data_received(view[room:])
        else:
            self.refuse(431, f"request line and headers exceed {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.read_since is None:
            self.read_since = self.loop.time()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.reading_body = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_body = False
        self.header_bytes = 0
        self.read_since = None

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what httptools cannot parse; within a body, the app answers."""
        if self.reading_body:
            self.fail_body(InvalidBody("request body is not valid HTTP/1.1 (a bad chunk size?)"))
        else:
            super().send_400_response(msg)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Run the app with a receive() that raises the error its body was given up with."""

        async def receive() -> ASGIReceiveEvent:
            message = await cycle.receive()
            failed = self.failed_body
            if failed is not None and failed[0] is cycle and message["type"] == "http.request":
                raise failed[1]
            return message

        async def run(scope: Scope, _: ASGIReceiveCallable, send: ASGISendCallable) -> None:
            await app(scope, receive, send)

        super()._start_asgi_task(cycle, run)

    def handle_websocket_upgrade(self) -> None:
        """The connection becomes a WebSocket one, which this protocol no longer reads."""
        if self.deadline is not None:
            self.deadline.cancel()
        super().handle_websocket_upgrade()

    def check_deadline(self) -> None:
        now = self.loop.time()
        if self.read_since is not None and self.flow.read_paused:
            self.read_since = now  # the server, not the client, has stopped reading
        if self.read_since is None or now < self.read_since + self.read_timeout_s:
            start = now if self.read_since is None else self.read_since
            self.deadline = self.loop.call_at(start + self.read_timeout_s, self.check_deadline)
            return
        self.deadline = None
        late = f"within {self.read_timeout_s:g} s"
        if self.reading_body:
            self.fail_body(RequestTimeout(f"request body not received in full {late}"))
        elif self.header_bytes:
            self.refuse(408, f"request headers not received in full {late}")
        else:
            self.transport.close()  # a connection that never sent a request

    def fail_body(self, error: ServiceError) -> None:
        """Give up reading the current body: the app's receive() raises ``error``, and the
        connection closes once the app has answered."""
        cycle = self.cycle
        self.failed_body = (cycle, error)
        self.reading_body = False
        self.read_since = None
        cycle.keep_alive = False
        if cycle.response_complete:
            self.transport.close()
        else:
            cycle.message_event.set()  # wake a receive() waiting for more of the body

    def refuse(self, status: int, message: str) -> None:
        """Answer a request the app never saw (its headers are incomplete), then close."""
        self.logger.warning("refused a request from %s: %s", self.client, message)
        body = orjson.dumps({"detail": message})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


def limited_protocol(settings: Settings) -> Callable[..., LimitedHttpToolsProtocol]:
    """What uvicorn's ``http`` option takes to build each connection's protocol (a partial, so
    ``MADE_WORKERS`` > 1 can pickle it to the worker processes)."""
    return functools.partial(
        LimitedHttpToolsProtocol,
        max_header_bytes=settings.max_header_bytes,
        read_timeout_s=settings.read_timeout_s,
    )
