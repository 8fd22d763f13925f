"""The hot route answers plain likelihood requests itself and hands every other one, body intact,
to the FastAPI route; both give the same answers."""

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.inference.engine import Engine
from service.inference.errors import ServiceError, Unavailable
from service.inference.state import ServingState
from service.settings import Settings
from service.transport.app import create_app
from service.transport.errors import InvalidBody, RequestTimeout, status_of
from service.transport.hot_path import HotLikelihood
from service.transport.routes import v1
from tests.conftest import run_async

KEY = "hot-key"
ROUTES = v1.LIKELIHOOD_ROUTES  # the default model's, a named model's, a named version's


@pytest.fixture(scope="module")
def engine(tiny_artifact: Path) -> Engine:
    return Engine.load(tiny_artifact)


def rows_of(engine: Engine, count: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((count, engine.dim)) < 0.5).astype(np.float32)


def headers(body: bytes, **extra: str) -> list[tuple[bytes, bytes]]:
    fields = {"content-type": "application/json", "content-length": str(len(body)), **extra}
    return [(k.encode(), v.encode()) for k, v in fields.items() if v]


class FastAPIStandIn:
    """Records what the hot route hands on: the request and the body it can still read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def call(
    hot: HotLikelihood, body: bytes, header_list=None, messages=None, path="/v1/log-likelihood"
) -> dict:
    """One request through the ASGI app; the response's status, headers, JSON body and scope."""
    scope = {"type": "http", "method": "POST", "path": path}
    scope["headers"] = headers(body) if header_list is None else header_list
    incoming = list(messages or [{"type": "http.request", "body": body, "more_body": False}])
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    run_async(hot(scope, receive, send))
    if not sent:
        return {"status": None, "scope": scope}
    body_bytes = b"".join(m.get("body", b"") for m in sent[1:])
    return {
        "status": sent[0]["status"],
        "headers": dict(sent[0]["headers"]),
        "json": orjson.loads(body_bytes) if body_bytes else None,
        "scope": scope,
    }


def hot_route(engine: Engine, **settings: object) -> tuple[HotLikelihood, FastAPIStandIn]:
    runtime = ServingState.with_engine(Settings(**settings), engine)
    stand_in = FastAPIStandIn()
    return HotLikelihood(stand_in, runtime, ROUTES), stand_in


@pytest.mark.parametrize("image", [False, True])
def test_plain_requests_are_answered_without_fastapi(
    engine: Engine, digits_artifact: Path, image: bool
) -> None:
    engine = Engine.load(digits_artifact) if image else engine  # digits rows may be 8 x 8
    hot, stand_in = hot_route(engine, max_rows=3)
    rows = rows_of(engine, 3)
    shaped = rows.reshape(3, *engine.manifest.image_shape) if image else rows
    body = orjson.dumps({"inputs": shaped.astype(int).tolist()}, option=orjson.OPT_INDENT_2)
    answer = call(hot, body)
    assert stand_in.bodies == []
    assert answer["status"] == 200
    expected = engine.mixture(engine.member_log_probs(rows))
    np.testing.assert_allclose(answer["json"]["log_likelihood"], expected, rtol=1e-12)
    assert answer["json"]["method"] == ["exact"] * 3
    assert answer["json"]["combination"] == "mixture"
    assert int(answer["headers"][b"content-length"]) > 0
    # The request log labels it with the route's path and logs its rows.
    assert answer["scope"]["route"].path == "/v1/log-likelihood"
    assert answer["scope"]["state"]["rows"] == 3


def test_a_named_model_and_version_are_answered_without_fastapi(engine: Engine) -> None:
    hot, stand_in = hot_route(engine)
    name = engine.manifest.name
    version = next(iter(hot.state.models[name]))
    body = orjson.dumps({"inputs": rows_of(engine, 2).astype(int).tolist()})
    for path, template in (
        (f"/v1/models/{name}/log-likelihood", "/v1/models/{name}/log-likelihood"),
        (
            f"/v1/models/{name}/versions/{version}/log-likelihood",
            "/v1/models/{name}/versions/{version}/log-likelihood",
        ),
    ):
        answer = call(hot, body, path=path)
        assert answer["status"] == 200 and stand_in.bodies == [], path
        assert answer["scope"]["route"].path == template
        assert answer["scope"]["state"]["model"] == name
    # A model or version not in memory goes to the route, which loads it or says why not.
    for path in ("/v1/models/other/log-likelihood", f"/v1/models/{name}/versions/9/log-likelihood"):
        assert call(hot, body, path=path)["status"] == 299  # the stand-in's answer
    assert stand_in.bodies == [body, body]


def test_a_correct_api_key_is_accepted(engine: Engine) -> None:
    hot, stand_in = hot_route(engine, api_key=KEY)
    body = orjson.dumps({"inputs": rows_of(engine, 1).astype(int).tolist()})
    answer = call(hot, body, headers(body, authorization=f"Bearer {KEY}"))
    assert answer["status"] == 200
    assert stand_in.bodies == []


def _others(dim: int) -> dict[str, tuple[bytes, dict[str, str]]]:
    row = [0, 1] * (dim // 2) + [1] * (dim % 2)
    plain = orjson.dumps({"inputs": [row]})
    return {
        "an option": (orjson.dumps({"inputs": [row], "per_member": True}), {}),
        "a default option spelled out": (orjson.dumps({"inputs": [row], "seed": None}), {}),
        "a null entry": (orjson.dumps({"inputs": [[None, *row[1:]]]}), {}),
        "a non-binary number": (orjson.dumps({"inputs": [[0.5, *row[1:]]]}), {}),
        "a short row": (orjson.dumps({"inputs": [row[1:]]}), {}),
        "too many rows": (orjson.dumps({"inputs": [row] * 4}), {}),
        "broken JSON": (plain[:-1], {}),
        "a repeated key": (plain[:-1] + b', "\\u0069nputs": "x"}', {}),
        "no inputs": (b'{"rows": [[0, 1]]}', {}),
        "another content type": (plain, {"content-type": "text/plain"}),
        "no content length": (plain, {"content-length": ""}),
        "a body over the limit": (plain, {"content-length": str(16 * 1024 * 1024 + 1)}),
        "no API key": (plain, {"authorization": ""}),
        "a wrong API key": (plain, {"authorization": "Bearer wrong"}),
    }


@pytest.mark.parametrize("case", list(_others(8)))
def test_other_requests_reach_fastapi_with_their_body(engine: Engine, case: str) -> None:
    hot, stand_in = hot_route(engine, max_rows=3, api_key=KEY)
    body, extra = _others(engine.dim)[case]
    fields = {"authorization": f"Bearer {KEY}", **extra}
    answer = call(hot, body, headers(body, **fields))
    assert answer["status"] == 299
    assert stand_in.bodies == [body]


def test_a_model_not_ready_leaves_the_request_to_fastapi(engine: Engine) -> None:
    hot, stand_in = hot_route(engine)
    hot.state.ready = False
    body = orjson.dumps({"inputs": rows_of(engine, 1).astype(int).tolist()})
    assert call(hot, body)["status"] == 299
    assert stand_in.bodies == [body]


def test_a_body_in_chunks_is_read_whole(engine: Engine) -> None:
    hot, stand_in = hot_route(engine)
    body = orjson.dumps({"inputs": rows_of(engine, 2).astype(int).tolist()})
    parts = [body[:7], body[7:30], body[30:]]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < 2} for i, part in enumerate(parts)
    ]
    assert call(hot, body, messages=messages)["status"] == 200
    assert stand_in.bodies == []


def test_a_client_gone_mid_body_is_recorded_as_499_and_costs_nothing(engine: Engine) -> None:
    """The answer goes nowhere (uvicorn drops it); its status is what the request log counts."""
    hot, stand_in = hot_route(engine)
    body = orjson.dumps({"inputs": rows_of(engine, 1).astype(int).tolist()})
    messages = [{"type": "http.request", "body": body[:10], "more_body": True}]
    answer = call(hot, body, messages=messages)
    assert answer["status"] == 499
    assert answer["scope"]["route"].path == "/v1/log-likelihood"
    assert stand_in.bodies == []


@pytest.mark.parametrize(
    "error", [RequestTimeout("body too slow"), InvalidBody("bad chunk")], ids=["late", "malformed"]
)
def test_a_body_the_server_gives_up_on_is_answered_here(
    engine: Engine, error: ServiceError
) -> None:
    """service.transport.http_limits makes receive() raise; the hot route answers like the
    FastAPI one."""
    hot, stand_in = hot_route(engine)

    async def receive() -> dict:
        raise error

    scope = {"type": "http", "method": "POST", "path": "/v1/log-likelihood"}
    scope["headers"] = headers(b"{}")
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    run_async(hot(scope, receive, send))
    assert sent[0]["status"] == status_of(error)
    assert orjson.loads(sent[1]["body"]) == {"detail": error.message}
    assert scope["route"].path == "/v1/log-likelihood"
    assert stand_in.bodies == []


def test_overload_answers_503_with_retry_after(engine: Engine) -> None:
    hot, _ = hot_route(engine)

    async def full(rows: np.ndarray, engine: Engine | None = None) -> np.ndarray:
        raise Unavailable("queue full (9 rows waiting); retry after a moment")

    hot.state.member_log_probs = full
    body = orjson.dumps({"inputs": rows_of(engine, 1).astype(int).tolist()})
    answer = call(hot, body)
    assert answer["status"] == 503
    assert answer["headers"][b"retry-after"] == b"1"
    assert answer["json"] == {"detail": "queue full (9 rows waiting); retry after a moment"}


def test_both_paths_give_identical_responses(tiny_artifact: Path, engine: Engine) -> None:
    """The same rows through the hot route and (an option spelled out) the FastAPI route."""
    inputs = rows_of(engine, 5, seed=3).astype(int).tolist()
    with TestClient(create_app(Settings(model_dir=tiny_artifact))) as http:
        hot = http.post("/v1/log-likelihood", json={"inputs": inputs})
        routed = http.post("/v1/log-likelihood", json={"inputs": inputs, "combination": "mixture"})
    assert hot.status_code == routed.status_code == 200
    assert hot.headers["content-type"] == routed.headers["content-type"]
    assert json.loads(hot.content) == json.loads(routed.content)


def test_cors_and_request_ids_cover_the_hot_route(tiny_artifact: Path, engine: Engine) -> None:
    origin = "https://app.example"
    inputs = rows_of(engine, 1).astype(int).tolist()
    settings = Settings(model_dir=tiny_artifact, cors_origins=[origin])
    with TestClient(create_app(settings)) as http:
        answer = http.post(
            "/v1/log-likelihood",
            json={"inputs": inputs},
            headers={"Origin": origin, "X-Request-ID": "hot-1"},
        )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == origin
    assert answer.headers["x-request-id"] == "hot-1"
