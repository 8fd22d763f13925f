"""Malformed and hostile requests: each gets its documented status and a message naming the problem,
never a 500, and the service answers the next good request correctly."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from model.cli import export_main, train_main
from service.app import create_app
from service.engine import Engine
from service.settings import Settings

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

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": LL,
        "raw_path": LL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
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
