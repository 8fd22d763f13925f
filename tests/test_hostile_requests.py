"""Malformed and hostile requests: each gets its documented status and a message naming the problem,
never a 500, and the service answers the next good request correctly."""

import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model.cli import export_main, train_main
from service.contract.artifact import read_manifest
from service.inference.engine import Engine
from service.settings import Settings
from service.transport.app import create_app
from service.transport.http_limits import limited_protocol
from tests.servers import free_port, http_scope, stop

LIMITS = dict(max_body_bytes=1 << 20, max_rows=64, max_samples=64, max_particles=512)
TEN_MB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A D=64 model with image shape 8x8, for the image-shaped cases."""
    root = tmp_path_factory.mktemp("digits")
    args = ["--epochs", "1", "--masks", "2", "--hidden", "32", "--quiet", "--seed", "1"]
    assert train_main(["--out", str(root / "run"), *args]) == 0
    assert export_main([str(root / "run" / "model.pt"), "--out", str(root / "art")]) == 0
    return root / "art"


@pytest.fixture(scope="module")
def served(tiny_artifact: Path, digits_artifact: Path) -> Iterator[dict[str, tuple]]:
    """One in-process client per model, with limits small enough to cross cheaply."""
    out = {}
    with (
        TestClient(create_app(Settings(model_dir=tiny_artifact, **LIMITS))) as flat,
        TestClient(create_app(Settings(model_dir=digits_artifact, **LIMITS))) as image,
    ):
        out["flat"] = (flat, Engine.load(tiny_artifact))
        out["image"] = (image, Engine.load(digits_artifact))
        yield out


def nested(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"0" + b"]" * depth + b"}"


def rows_json(rows: list) -> bytes:
    return orjson.dumps({"inputs": rows})


ZERO8 = [0] * 8
IMAGE = [[0] * 8 for _ in range(8)]


@dataclass
class Case:
    name: str
    path: str
    body: bytes | dict
    status: int
    text: str
    model: str = "flat"
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


def json_case(name: str, path: str, body: dict, status: int, text: str, model: str = "flat"):
    return Case(name, path, body, status, text, model)


LL, COMPLETE, SAMPLE = "/v1/log-likelihood", "/v1/complete", "/v1/sample"
CASES = [
    # transport: media type, JSON syntax, size
    Case("text/plain", LL, b'{"inputs": [[0]]}', 415, "application/json",
         headers={"content-type": "text/plain"}),
    Case("no content type", SAMPLE, b"{}", 415, "got 'none'", headers={}),
    Case("form encoded", SAMPLE, b"num_samples=1", 415, "application/x-www-form-urlencoded",
         headers={"content-type": "application/x-www-form-urlencoded"}),
    Case("invalid JSON", LL, b"not json", 400, "not valid JSON"),
    Case("truncated body", LL, b'{"inputs": [[0, 1, 0', 400, "not valid JSON"),
    Case("empty body", SAMPLE, b"", 400, "not valid JSON"),
    Case("invalid UTF-8", SAMPLE, b'{"seed": "\xff"}', 400, "not valid JSON"),
    Case("NaN literal", LL, b'{"inputs": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}', 400, "not valid JSON"),
    Case("1e309 overflows", LL, b'{"inputs": [[1e309, 0, 0, 0, 0, 0, 0, 0]]}', 400, "infinity"),
    Case("10,000 nested arrays", LL, nested(10_000), 400, "depth limit exceeded"),
    Case("100 nested arrays", COMPLETE, nested(100), 422, "inputs.0: this model has no image"),
    Case("body is an array", SAMPLE, b"[1, 2]", 422, "must be a JSON object"),
    Case("body is null", SAMPLE, b"null", 422, "must be a JSON object"),
    # request objects
    json_case("empty object", LL, {}, 422, "inputs: Field required"),
    json_case("extra field", SAMPLE, {"num_samples": 1, "temperature": 2}, 422, "Extra inputs"),
    json_case("inputs not a list", LL, {"inputs": "0101"}, 422, "non-empty array of rows"),
    json_case("no rows", LL, {"inputs": []}, 422, "non-empty array of rows"),
    json_case("row not a list", LL, {"inputs": ZERO8}, 422, "inputs.0: must be an array"),
    # entries
    json_case("-0.5", LL, {"inputs": [[-0.5, *ZERO8[1:]]]}, 422, "got -0.5"),
    json_case("2", LL, {"inputs": [[0, 2, *ZERO8[2:]]]}, 422, "inputs.0.1: must be 0, 1 or null"),
    json_case("true", LL, {"inputs": [[True, *ZERO8[1:]]]}, 422, "got True"),
    json_case('"1"', LL, {"inputs": [["1", *ZERO8[1:]]]}, 422, "got '1'"),
    json_case("object entry", LL, {"inputs": [[{}, *ZERO8[1:]]]}, 422, "got {}"),
    json_case("null in /sample-free complete", LL, {"inputs": [[None] * 8], "per_member": True},
              422, "need rows without null"),
    # shapes
    json_case("row too short", LL, {"inputs": [ZERO8[:7]]}, 422, "has 7 values, expected 8"),
    json_case("row too long", COMPLETE, {"inputs": [[*ZERO8, 0]]}, 422, "has 9 values"),
    json_case("ragged rows", LL, {"inputs": [ZERO8, ZERO8[:3]]}, 422, "inputs.1: has 3 values"),
    json_case("too many rows", LL, {"inputs": [ZERO8] * 65}, 422, "the limit is 64"),
    json_case("image rows on a flat model", LL, {"inputs": [[[0] * 4, [0] * 4]]}, 422,
              "no image shape"),
    json_case("mixed image and flat", LL, {"inputs": [IMAGE, [0] * 64]}, 422,
              "mixes flat and image-shaped", model="image"),
    json_case("image of the wrong shape", LL, {"inputs": [[[0] * 8] * 7]}, 422,
              "8 rows of 8", model="image"),
    json_case("image pixel 0.5", LL, {"inputs": [[[0.5] + [0] * 7, *IMAGE[1:]]]}, 422,
              "inputs.0.0.0: must be 0, 1 or null, got 0.5", model="image"),
    # numbers in options
    json_case("huge num_samples", SAMPLE, {"num_samples": 10**9}, 422, "at most 64"),
    json_case("num_samples x rows", COMPLETE, {"inputs": [[None] * 8] * 9, "num_samples": 8},
              422, "8 x 9"),
    json_case("num_samples 0", SAMPLE, {"num_samples": 0}, 422, "greater than or equal to 1"),
    json_case("num_samples 1.5", SAMPLE, {"num_samples": 1.5}, 422, "valid integer"),
    json_case('num_samples "3"', SAMPLE, {"num_samples": "3"}, 422, "valid integer"),
    json_case("num_samples true", SAMPLE, {"num_samples": True}, 422, "valid integer"),
    json_case("negative seed", SAMPLE, {"seed": -1}, 422, "greater than or equal to 0"),
    json_case("non-integer seed", SAMPLE, {"seed": 0.5}, 422, "valid integer"),
    json_case("seed past 2^63", SAMPLE, {"seed": 2**63}, 422, "less than or equal"),
    json_case("num_particles 1", LL, {"inputs": [[None] * 8], "num_particles": 1}, 422,
              "greater than or equal to 2"),
    json_case("huge num_particles", COMPLETE, {"inputs": [[None] * 8], "num_particles": 10**6},
              422, "at most 512"),
    json_case("per_member as string", LL, {"inputs": [ZERO8], "per_member": "yes"}, 422,
              "valid boolean"),
    json_case("unknown format", SAMPLE, {"format": "gif"}, 422, "'json' or 'png'"),
    json_case("png of a flat model", SAMPLE, {"format": "png"}, 422, "png needs an image model"),
    # a repeated key: orjson would keep the last value, the raw-bytes row decoder the first
    Case("inputs twice, hot route", LL, b'{"inputs": [[0,1,0,1,0,1,0,1]], "\\u0069nputs": "x"}',
         422, "inputs: appears twice"),
    Case("inputs twice, rows last", LL, b'{"inputs": "x", "inputs": [[0,1,0,1,0,1,0,1]]}', 422,
         "inputs: appears twice"),
    Case("inputs twice, general path", COMPLETE,
         b'{"inputs": [[null,1,0,1,0,1,0,1]], "inputs": [[0,0,0,0,0,0,0,0]]}', 422,
         "inputs: appears twice"),
    Case("an option twice", SAMPLE, b'{"num_samples": 1, "num_samples": 2}', 422,
         "num_samples: appears twice"),
    Case('":" inside a string is no key', COMPLETE,
         b'{"inputs": [[null,1,0,1,0,1,0,1]], "format": "a\\":"}', 422, "format: Input should be"),
    # size: declared by Content-Length
    Case("10 MB body", LL, b'{"inputs": [' + b"[0,0,0,0,0,0,0,0]," * (TEN_MB // 18) + b"[]]}",
         413, "exceeds the limit of 1048576 bytes"),
]  # fmt: skip


def error_text(detail: object) -> str:
    """One line per problem, 'field.path: message', whether the detail is a string or a list."""
    if isinstance(detail, str):
        return detail
    assert isinstance(detail, list)
    return "\n".join(".".join(map(str, e["loc"][1:])) + ": " + e["msg"] for e in detail)


def good_request_is_answered(client: TestClient, engine: Engine) -> None:
    rows = (np.random.default_rng(7).random((3, engine.dim)) < 0.5).astype(np.float32)
    response = client.post("/v1/log-likelihood", json={"inputs": rows.astype(int).tolist()})
    assert response.status_code == 200, response.text
    expected = engine.log_likelihood(rows).log_likelihood
    np.testing.assert_allclose(response.json()["log_likelihood"], expected, rtol=1e-6)


def test_the_table_is_big_enough():
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_request(served, case: Case):
    client, engine = served[case.model]
    body = case.body if isinstance(case.body, bytes) else orjson.dumps(case.body)
    response = client.post(case.path, content=body, headers=case.headers)
    assert response.status_code == case.status, response.text
    assert case.text in error_text(response.json()["detail"])
    good_request_is_answered(client, engine)


def test_a_streamed_body_past_the_limit_is_refused_before_it_is_all_read(served):
    """Fed straight to the ASGI app (TestClient would buffer the body), with no Content-Length."""
    client, engine = served["flat"]
    chunk = b"[0,0,0,0,0,0,0,0]," * 3000  # 54 kB
    consumed = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal consumed
        consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": consumed < TEN_MB}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    scope = http_scope(LL, headers)
    client.portal.call(client.app, scope, receive, send)
    assert sent[0]["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert b"exceeds the limit" in body
    assert consumed < 2 * LIMITS["max_body_bytes"]
    good_request_is_answered(client, engine)


def test_a_lying_content_length_is_not_trusted(served):
    client, engine = served["flat"]
    body = b'{"num_samples": 1, "pad": "' + b"x" * (2 << 20) + b'"}'
    response = client.post(
        SAMPLE, content=body, headers={"content-type": "application/json", "content-length": "10"}
    )
    assert response.status_code == 413, response.text
    good_request_is_answered(client, engine)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_methods_get_405(served, method):
    client, engine = served["flat"]
    assert client.request(method, LL).status_code == 405
    good_request_is_answered(client, engine)


JSON_TYPE = {"content-type": "application/json"}
TENSOR = b'{"name": "x", "shape": [1, 8], "datatype": "INT32", "data": [0, 1, 0, 1, 0, 1, 0, 1]'


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"inputs": [' + TENSOR + b'}], "inputs": []}', "inputs"),
        (b'{"inputs": [' + TENSOR + b', "name": "y"}]}', "name"),
    ],
    ids=["top level", "in a tensor"],
)
def test_v2_refuses_a_repeated_key(served, body: bytes, key: str):
    """One rule on every route; the protocol's errors are 400 with its own body."""
    client, engine = served["flat"]
    response = client.post(f"/v2/models/{engine.manifest.name}/infer", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{key}: appears twice")
    good_request_is_answered(client, engine)


def test_a_quote_and_colon_inside_a_string_is_no_repeated_key(served):
    """The cheap count sees a key end in ``a\\":b``; the exact check then finds no repeat."""
    client, engine = served["flat"]
    body = b'{"id": "a\\":b", "inputs": [' + TENSOR + b"}]}"
    response = client.post(f"/v2/models/{engine.manifest.name}/infer", content=body)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == 'a":b'


@pytest.mark.parametrize(
    "body",
    [
        b'{"model_dir": "digits\\u0000v2"}',
        b'{"model_dir": "' + b"a" * 300 + b'"}',
        b'{"model_dir": "\\ud800"}',
        b'{"model_dir": "nope", "model_dir": "tiny"}',
    ],
    ids=["NUL", "longer than the file system allows", "lone surrogate", "given twice"],
)
def test_a_model_dir_reload_cannot_use_gets_422_naming_it(tiny_artifact: Path, body: bytes):
    settings = Settings(model_dir=tiny_artifact, api_key="admin-key", **LIMITS)
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/admin/reload",
            content=body,
            headers={**JSON_TYPE, "authorization": "Bearer admin-key"},
        )
        assert response.status_code == 422, response.text
        assert [error["loc"] for error in response.json()["detail"]] == [["body", "model_dir"]]
        assert client.get("/v1/model", headers={"authorization": "Bearer admin-key"}).is_success


# What only the HTTP server sees (header size, read time, framing), against a real made-serve.

READ_TIMEOUT_S = 1.0
HEADER_LIMIT = Settings.model_fields["max_header_bytes"].default
SOCKET_TIMEOUT_S = 20.0  # far past every deadline the server keeps: a hang fails, slowly


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path
    model: str

    def metric(self, route: str, status: int) -> float:
        """made_http_requests_total for a POST to ``route`` answered ``status``."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "made_http_requests_total"
            and sample.labels.items()
            >= {"route": route, "method": "POST", "status": str(status)}.items()
        )

    def errors_logged(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if '"level":"error"' in line]


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port, log = free_port(), tmp_path_factory.mktemp("server") / "made-serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MADE_")}
    env.update(
        MADE_MODEL_DIR=str(tiny_artifact),
        MADE_PORT=str(port),
        MADE_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
        MADE_INTRA_OP_THREADS="1",
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [Path(sys.executable).with_name("made-serve")], env=env, stdout=output, stderr=output
        )
    deadline = time.monotonic() + 60
    while not ready(port):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)  # poll interval
    try:
        yield Server(process, port, log, read_manifest(tiny_artifact).name)
    finally:
        stop(process, signal.SIGTERM, 30)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT_S)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, on a connection that stays open."""
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(65536)
    head, body = response.split(b"\r\n\r\n", 1)
    length = next(
        int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> dict:
    return orjson.loads(response.split(b"\r\n\r\n", 1)[1])


def post_head(path: str, *fields: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json", *fields]
    return "\r\n".join([*lines, "", ""]).encode()


def eventually(condition: Callable[[], bool]) -> None:
    """The server records a request after its answer is on the wire: poll for it."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "not recorded in time"
        time.sleep(0.05)


ROW_BODY = b'{"inputs": [[0, 1, 0, 1, 0, 1, 0, 1]]}'


@pytest.mark.slow
@pytest.mark.parametrize("extra", [-1024, 1024], ids=["within", "past"])
def test_headers_are_bounded(server: Server, extra: int):
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Pad: "
    pad = b"p" * (HEADER_LIMIT + extra - len(head) - 4)
    with connect(server) as sock:
        sock.sendall(head + pad + b"\r\n\r\n")
        response = read_to_close(sock)
    if extra < 0:
        assert status_of(response) == 200
    else:
        assert status_of(response) == 431
        assert body_of(response) == {
            "detail": f"request line and headers exceed {HEADER_LIMIT} bytes"
        }


@pytest.mark.slow
def test_a_64_mib_header_is_neither_read_nor_kept(server: Server):
    """Refused after the limit: the server closes while the client is still sending."""
    before = resident_bytes(server.process.pid)
    with connect(server) as sock, pytest.raises(OSError):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n")
    assert resident_bytes(server.process.pid) - before < 16 << 20
    assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
    return int(kib) * 1024


@pytest.mark.slow
def test_slow_headers_get_408(server: Server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")
        response = read_to_close(sock)
    assert status_of(response) == 408
    assert "request headers not received" in body_of(response)["detail"]


@pytest.mark.slow
def test_a_connection_that_sends_nothing_is_closed(server: Server):
    with connect(server) as sock:
        assert read_to_close(sock) == b""


@pytest.mark.slow
@pytest.mark.parametrize("path", [LL, SAMPLE, "/v2/models/{name}/infer"])
@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
def test_a_body_that_does_not_arrive_in_time_gets_408(server: Server, path: str, trickle: bool):
    """Answered by the app, so the hot route, FastAPI's and V2's all count it as a 408."""
    url = path.format(name=server.model)
    before = server.metric(path, 408)
    with connect(server) as sock:
        sock.sendall(post_head(url, "Content-Length: 1000") + b'{"in')
        # A byte every tenth of the timeout, until the server answers: each in time, the whole
        # request too late (the body would take 100 timeouts).
        while trickle and not select.select([sock], [], [], READ_TIMEOUT_S / 10)[0]:
            sock.sendall(b" ")
        response = read_to_close(sock)
    assert status_of(response) == 408
    message = body_of(response).get("detail") or body_of(response)["error"]
    assert "request body not received in full" in message
    eventually(lambda: server.metric(path, 408) == before + 1)
    assert server.errors_logged() == []


@pytest.mark.slow
@pytest.mark.parametrize("path", [LL, SAMPLE])
def test_a_malformed_chunked_body_gets_400_counted_as_400(server: Server, path: str):
    before = server.metric(path, 400), server.metric(path, 500)
    with connect(server) as sock:
        sock.sendall(post_head(path, "Transfer-Encoding: chunked") + b'5\r\n{"inp\r\nZZ\r\n')
        response = read_to_close(sock)
    assert status_of(response) == 400
    assert "not valid HTTP/1.1" in body_of(response)["detail"]
    eventually(lambda: (server.metric(path, 400), server.metric(path, 500)) == (before[0] + 1, 0))
    assert server.errors_logged() == []


@pytest.mark.slow
@pytest.mark.parametrize("path", [LL, COMPLETE])
def test_a_client_gone_mid_body_is_counted_499_not_500(server: Server, path: str):
    before = server.metric(path, 499)
    with connect(server) as sock:
        sock.sendall(post_head(path, "Content-Length: 1000") + ROW_BODY)
    eventually(lambda: server.metric(path, 499) == before + 1)
    assert server.metric(path, 500) == server.metric("unmatched", 500) == 0
    assert server.errors_logged() == []


@pytest.mark.slow
def test_a_keep_alive_connection_outlives_the_read_timeout(server: Server):
    """The deadline is per request: requests spread over more than it on one connection pass."""
    request = post_head(LL, f"Content-Length: {len(ROW_BODY)}") + ROW_BODY
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(request)
            assert status_of(read_response(sock)) == 200
            time.sleep(0.6 * READ_TIMEOUT_S)


def test_the_protocol_factory_pickles_for_worker_processes():
    """With MADE_WORKERS > 1 uvicorn hands its options to spawned workers by pickling them."""
    factory = pickle.loads(pickle.dumps(limited_protocol(Settings(read_timeout_s=7))))
    assert factory.keywords == {"max_header_bytes": HEADER_LIMIT, "read_timeout_s": 7}
