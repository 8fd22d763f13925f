"""The Open Inference Protocol routes: every answer's shape, datatypes, errors, parity with /v1."""

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.contract.artifact import Manifest, read_manifest
from service.settings import Settings
from service.transport.app import create_app

ROWS = [[0, 1, 0, 1, 1, 0, 0, 1], [1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]]
SHAPE = [len(ROWS), len(ROWS[0])]
FLAT = [v for row in ROWS for v in row]


@pytest.fixture
def client(tiny_artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=tiny_artifact))) as http:
        yield http


@pytest.fixture
def manifest(tiny_artifact: Path) -> Manifest:
    return read_manifest(tiny_artifact)


def infer_body(data: list, shape: list[int] = SHAPE, datatype: str = "INT32", **extra) -> dict:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}], **extra}


def v1_log_likelihood(http: TestClient, rows: list) -> np.ndarray:
    response = http.post("/v1/log-likelihood", json={"inputs": rows})
    assert response.status_code == 200
    return np.array(response.json()["log_likelihood"])


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json() == {
        "name": "made-serve",
        "version": version("made-serve"),
        "extensions": ["binary_tensor_data", "model_repository"],
    }
    live = client.get("/v2/health/live")
    ready = client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_model_metadata_describes_the_artifact(client: TestClient, manifest: Manifest) -> None:
    response = client.get(f"/v2/models/{manifest.name}")
    assert response.status_code == 200
    assert response.json() == {
        "name": manifest.name,
        "versions": [manifest.onnx.sha256[:12]],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, manifest.dim]}],
        "outputs": [{"name": "log_likelihood", "datatype": "FP64", "shape": [-1]}],
    }
    versioned = client.get(f"/v2/models/{manifest.name}/versions/{manifest.onnx.sha256[:12]}")
    assert versioned.json() == response.json()


def test_model_ready(client: TestClient, manifest: Manifest) -> None:
    version_path = f"/v2/models/{manifest.name}/versions/{manifest.onnx.sha256[:12]}/ready"
    for path in (f"/v2/models/{manifest.name}/ready", version_path):
        response = client.get(path)
        assert (response.status_code, response.json()) == (
            200,
            {"name": manifest.name, "ready": True},
        )


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other",
        "/v2/models/other/ready",
        "/v2/models/{name}/versions/000000000000",
        "/v2/models/{name}/versions/000000000000/ready",
    ],
)
def test_unknown_models_and_versions_are_404_with_an_error_body(
    client: TestClient, manifest: Manifest, path: str
) -> None:
    response = client.get(path.format(name=manifest.name))
    assert response.status_code == 404
    assert set(response.json()) == {"error"}
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v2/nothing/here", 404), ("DELETE", "/v2", 405), ("POST", "/v2/health/live", 405)],
)
def test_paths_no_route_serves_answer_the_protocols_error_body(
    client: TestClient, method: str, path: str, status: int
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert set(response.json()) == {"error"}


def test_paths_outside_v2_keep_fastapis_error_body(client: TestClient) -> None:
    response = client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_infer_on_an_unknown_model_is_404(client: TestClient) -> None:
    response = client.post("/v2/models/other/infer", json=infer_body(FLAT))
    assert response.status_code == 404 and "other" in response.json()["error"]


def test_infer_matches_v1_for_flat_and_nested_data(client: TestClient, manifest: Manifest) -> None:
    expected = v1_log_likelihood(client, ROWS)
    for data in (FLAT, ROWS):
        response = client.post(f"/v2/models/{manifest.name}/infer", json=infer_body(data, id="42"))
        assert response.status_code == 200
        body = response.json()
        assert body["model_name"] == manifest.name
        assert body["model_version"] == manifest.onnx.sha256[:12]
        assert body["id"] == "42"
        (output,) = body["outputs"]
        assert output["name"] == "log_likelihood"
        assert output["datatype"] == "FP64"
        assert output["shape"] == [len(ROWS)]
        np.testing.assert_allclose(output["data"], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("BOOL", [[bool(v) for v in row] for row in ROWS]),
        ("INT32", FLAT),
        ("UINT8", FLAT),
        ("FP32", [float(v) for v in FLAT]),
        ("FP64", [[float(v) for v in row] for row in ROWS]),
    ],
)
def test_infer_accepts_boolean_integer_and_float_datatypes(
    client: TestClient, manifest: Manifest, datatype: str, data: list
) -> None:
    response = client.post(
        f"/v2/models/{manifest.name}/infer", json=infer_body(data, datatype=datatype)
    )
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], v1_log_likelihood(client, ROWS), rtol=0, atol=1e-6
    )


def test_versioned_infer_and_requested_outputs(client: TestClient, manifest: Manifest) -> None:
    path = f"/v2/models/{manifest.name}/versions/{manifest.onnx.sha256[:12]}/infer"
    body = infer_body(FLAT, outputs=[{"name": "log_likelihood"}], parameters={"note": "any"})
    response = client.post(path, json=body)
    assert response.status_code == 200
    assert [o["name"] for o in response.json()["outputs"]] == ["log_likelihood"]


def test_without_an_id_the_request_id_is_echoed(client: TestClient, manifest: Manifest) -> None:
    response = client.post(
        f"/v2/models/{manifest.name}/infer", json=infer_body(FLAT), headers={"X-Request-ID": "abc"}
    )
    assert response.json()["id"] == "abc" == response.headers["x-request-id"]


def bad_requests(dim: int) -> list[tuple[str, dict | bytes]]:
    good = {"name": "x", "shape": [1, dim], "datatype": "INT32", "data": [0] * dim}
    return [
        ("shape [1, D+1]", infer_body([0] * (dim + 1), shape=[1, dim + 1])),
        ("shape of rank 1", infer_body([0] * dim, shape=[dim])),
        ("zero rows", infer_body([], shape=[0, dim])),
        ("data shorter than shape", infer_body([0] * (dim - 1), shape=[1, dim])),
        ("nested data of another shape", infer_body([[0] * dim] * 2, shape=[1, dim])),
        ("ragged data", infer_body([[0] * dim, [0] * (dim - 1)], shape=[2, dim])),
        ("values not 0/1", infer_body([0.5] + [0] * (dim - 1), shape=[1, dim], datatype="FP32")),
        ("value 2", infer_body([2] + [0] * (dim - 1), shape=[1, dim])),
        ("null value", infer_body([None] + [0] * (dim - 1), shape=[1, dim])),
        ("string values", infer_body(["1"] * dim, shape=[1, dim], datatype="BYTES")),
        ("strings under a numeric type", infer_body(["1"] * dim, shape=[1, dim])),
        ("unknown datatype", infer_body([0] * dim, shape=[1, dim], datatype="INT4")),
        ("data not an array", infer_body(0, shape=[1, dim])),  # type: ignore[arg-type]
        ("missing input x", {"inputs": [{**good, "name": "y"}]}),
        ("two inputs", {"inputs": [good, good]}),
        ("no inputs field", {"id": "1"}),
        (
            "input without datatype",
            {"inputs": [{k: v for k, v in good.items() if k != "datatype"}]},
        ),
        ("unknown output", {"inputs": [good], "outputs": [{"name": "logits"}]}),
        ("body not an object", b"[1, 2]"),
        ("body not JSON", b"{inputs"),
    ]


def test_protocol_errors_are_400_with_the_protocol_error_body(
    client: TestClient, manifest: Manifest
) -> None:
    for label, body in bad_requests(manifest.dim):
        path = f"/v2/models/{manifest.name}/infer"
        if isinstance(body, bytes):
            response = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            response = client.post(path, json=body)
        assert response.status_code == 400, label
        payload = response.json()
        assert set(payload) == {"error"}, label
        assert isinstance(payload["error"], str) and payload["error"], label


def test_limits_and_media_type_errors_use_the_protocol_body(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    with TestClient(create_app(Settings(model_dir=tiny_artifact, max_rows=2))) as http:
        path = f"/v2/models/{manifest.name}/infer"
        too_many = http.post(path, json=infer_body(FLAT))
        assert too_many.status_code == 400 and "limit" in too_many.json()["error"]
        as_text = http.post(path, content=b"{}", headers={"content-type": "text/plain"})
        assert as_text.status_code == 415 and set(as_text.json()) == {"error"}


def test_before_startup_ready_is_503_and_live_is_200(tiny_artifact: Path) -> None:
    # Without ``with``, the lifespan has not run: the model is not loaded yet.
    http = TestClient(create_app(Settings(model_dir=tiny_artifact)))
    assert http.get("/v2/health/live").status_code == 200
    for path in ("/v2/health/ready", "/v2/models/any/ready", "/v2/models/any"):
        response = http.get(path)
        assert response.status_code == 503, path
        assert "not ready" in response.json()["error"]


def test_api_key_guards_models_but_not_health(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    with TestClient(create_app(Settings(model_dir=tiny_artifact, api_key="s3cret"))) as http:
        path = f"/v2/models/{manifest.name}/infer"
        refused = http.post(path, json=infer_body(FLAT))
        assert refused.status_code == 401 and set(refused.json()) == {"error"}
        allowed = http.post(path, json=infer_body(FLAT), headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get(f"/v2/models/{manifest.name}/ready").status_code == 200


# The binary tensor data extension: JSON header, then raw little-endian tensors.
BINARY_TYPES = {
    "BOOL": "u1",
    "UINT8": "u1",
    "INT8": "i1",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT16": "<u2",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def tensor_bytes(rows: np.ndarray, datatype: str) -> bytes:
    if datatype == "BF16":  # the upper half of each float32
        return (rows.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return rows.astype(BINARY_TYPES[datatype]).tobytes()


OCTET = "application/octet-stream"


def binary_request(
    header: dict, data: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a binary request; ``header_length`` overrides the true JSON length."""
    json_part = orjson.dumps(header)
    length = len(json_part) if header_length is None else header_length
    return json_part + data, {"Inference-Header-Content-Length": str(length)}


def binary_input(shape: list[int], datatype: str, size: int, **extra) -> dict:
    parameters = {"binary_data_size": size, **extra.pop("parameters", {})}
    return {"name": "x", "shape": shape, "datatype": datatype, "parameters": parameters, **extra}


def binary_outputs(response) -> tuple[dict, np.ndarray]:
    """A binary response -> (its JSON header, its one FP64 output)."""
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:length])
    (output,) = header["outputs"]
    assert "data" not in output
    values = np.frombuffer(response.content[length:], dtype="<f8")
    assert output["parameters"] == {"binary_data_size": values.nbytes}
    assert len(response.content) == length + values.nbytes
    return header, values


@pytest.mark.parametrize("datatype", [*BINARY_TYPES, "BF16"])
def test_binary_inputs_of_every_datatype_match_v1(
    client: TestClient, manifest: Manifest, datatype: str
) -> None:
    rows = np.array(ROWS)
    data = tensor_bytes(rows, datatype)
    body, headers = binary_request({"inputs": [binary_input(SHAPE, datatype, len(data))]}, data)
    response = client.post(f"/v2/models/{manifest.name}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], v1_log_likelihood(client, ROWS), rtol=0, atol=1e-6
    )


def test_a_body_without_content_type_is_json(client: TestClient, manifest: Manifest) -> None:
    response = client.post(
        f"/v2/models/{manifest.name}/infer", content=orjson.dumps(infer_body(FLAT))
    )
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], v1_log_likelihood(client, ROWS), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    ("parameters", "outputs", "binary"),
    [
        ({"binary_data_output": True}, None, True),
        (None, [{"name": "log_likelihood", "parameters": {"binary_data": True}}], True),
        (
            {"binary_data_output": True},
            [{"name": "log_likelihood", "parameters": {"binary_data": False}}],
            False,
        ),
        ({"binary_data_output": False}, [{"name": "log_likelihood"}], False),
    ],
)
def test_binary_output_follows_its_flag_then_the_requests(
    client: TestClient, manifest: Manifest, parameters: dict | None, outputs, binary: bool
) -> None:
    request = infer_body(FLAT, id="7", parameters=parameters, outputs=outputs)
    response = client.post(f"/v2/models/{manifest.name}/infer", json=request)
    assert response.status_code == 200
    expected = v1_log_likelihood(client, ROWS)
    if not binary:
        assert "inference-header-content-length" not in response.headers
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected, atol=1e-6)
        return
    header, values = binary_outputs(response)
    assert header["id"] == "7" and header["model_name"] == manifest.name
    assert header["outputs"][0] | {"parameters": None} == {
        "name": "log_likelihood",
        "shape": [len(ROWS)],
        "datatype": "FP64",
        "parameters": None,
    }
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


def test_binary_inputs_and_outputs_together(client: TestClient, manifest: Manifest) -> None:
    data = tensor_bytes(np.array(ROWS), "FP32")
    body, headers = binary_request(
        {
            "inputs": [binary_input(SHAPE, "FP32", len(data))],
            "parameters": {"binary_data_output": True},
        },
        data,
    )
    response = client.post(f"/v2/models/{manifest.name}/infer", content=body, headers=headers)
    assert response.status_code == 200
    np.testing.assert_allclose(
        binary_outputs(response)[1], v1_log_likelihood(client, ROWS), rtol=0, atol=1e-6
    )


def bad_binary_requests(dim: int) -> list[tuple[str, tuple[bytes, dict[str, str]], str]]:
    """(label, (body, headers), a phrase the error must hold)."""
    shape = [2, dim]
    bools = tensor_bytes(np.zeros(shape), "BOOL")
    floats = tensor_bytes(np.zeros(shape), "FP32")

    def one(tail: bytes, datatype: str = "BOOL", size: int | None = None, **extra):
        size = len(tail) if size is None else size
        return binary_request({"inputs": [binary_input(shape, datatype, size, **extra)]}, tail)

    return [
        ("size of BOOL under FP32", one(bools, "FP32"), "input 'x': binary_data_size"),
        ("size of FP32 under BOOL", one(floats), "input 'x': binary_data_size"),
        ("size one byte short", one(bools[:-1], size=len(bools) - 1), "input 'x'"),
        ("size right, body short", one(bools[:-1], size=len(bools)), "input 'x'"),
        ("bytes after the tensor", one(bools + b"\0", size=len(bools)), "input 'x'"),
        ("size a string", one(bools, size="16"), "input 'x'"),  # type: ignore[arg-type]
        ("size a boolean", one(bools, size=True), "input 'x'"),  # type: ignore[arg-type]
        ("size negative", one(bools, size=-1), "input 'x'"),
        ("data and size", one(bools, data=[0] * 2 * dim), "input 'x'"),
        ("a byte 2 under BOOL", one(b"\2" + bools[1:]), "input 'x'"),
        ("NaN under FP32", one(tensor_bytes(np.full(shape, np.nan), "FP32"), "FP32"), "input 'x'"),
        (
            "header length past the body",
            binary_request({"inputs": [binary_input(shape, "BOOL", len(bools))]}, bools, 10**6),
            "Inference-Header-Content-Length",
        ),
        (
            "header length not a number",
            (one(bools)[0], {"Inference-Header-Content-Length": "12a"}),
            "Inference-Header-Content-Length",
        ),
        (
            "binary data without a header length",
            (one(bools)[0], {"Content-Type": "application/json"}),
            "body is not valid JSON",
        ),
        (
            "size without binary data",
            binary_request({"inputs": [binary_input(shape, "BOOL", len(bools))]}, b""),
            "input 'x'",
        ),
        (
            "binary data for a JSON input",
            binary_request(infer_body([0] * 2 * dim, shape=shape), bools),
            "input 'x'",
        ),
        (
            "binary_data not a boolean",
            binary_request(
                {
                    "inputs": [binary_input(shape, "BOOL", len(bools))],
                    "outputs": [{"name": "log_likelihood", "parameters": {"binary_data": 1}}],
                },
                bools,
            ),
            "outputs.0.parameters.binary_data",
        ),
    ]


def test_bad_binary_bodies_are_400_naming_the_culprit(
    client: TestClient, manifest: Manifest
) -> None:
    for label, (body, headers), phrase in bad_binary_requests(manifest.dim):
        response = client.post(f"/v2/models/{manifest.name}/infer", content=body, headers=headers)
        assert response.status_code == 400, label
        payload = response.json()
        assert set(payload) == {"error"}, label
        assert phrase in payload["error"], (label, payload["error"])


def test_octet_stream_is_accepted_and_other_media_types_are_415(
    client: TestClient, manifest: Manifest
) -> None:
    data = tensor_bytes(np.array(ROWS), "BOOL")
    body, headers = binary_request({"inputs": [binary_input(SHAPE, "BOOL", len(data))]}, data)
    path = f"/v2/models/{manifest.name}/infer"
    labelled = client.post(path, content=body, headers=headers | {"Content-Type": OCTET})
    assert labelled.status_code == 200
    refused = client.post(path, content=body, headers=headers | {"Content-Type": "text/csv"})
    assert refused.status_code == 415 and "application/json" in refused.json()["error"]


def test_the_openapi_infer_schema_resolves(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert "$defs" not in orjson.dumps(infer).decode()
    schema = infer["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["inputs"]["items"]["required"] == ["name", "shape", "datatype"]
    assert "application/octet-stream" in infer["responses"]["200"]["content"]
