"""The standard Open Inference Protocol client, ``tritonclient.http``, against a real made-serve
process: health, metadata, and inference with JSON and binary tensors (the client sends no
Content-Type), every answer equal to ``/v1/log-likelihood`` for the same rows."""

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.contract.artifact import Manifest, read_manifest
from tests.servers import made_serve

pytestmark = pytest.mark.slow
DTYPES = {"FP32": np.float32, "INT32": np.int32, "BOOL": np.bool_}


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a made-serve process serving the tiny artifact, once it is ready."""
    with made_serve(tiny_artifact, tmp_path_factory.mktemp("triton") / "serve.log") as address:
        yield address


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    http = triton.InferenceServerClient(server, network_timeout=30.0)
    yield http
    http.close()


@pytest.fixture(scope="module")
def manifest(tiny_artifact: Path) -> Manifest:
    return read_manifest(tiny_artifact)


@pytest.fixture(scope="module")
def rows(manifest: Manifest) -> np.ndarray:
    """Five random 0/1 rows and the two constant ones."""
    random = np.random.default_rng(3).random((5, manifest.dim)) < 0.5
    return np.vstack([random, np.zeros(manifest.dim), np.ones(manifest.dim)]).astype(np.int64)


def v1_log_likelihood(server: str, rows: np.ndarray) -> np.ndarray:
    response = httpx.post(
        f"http://{server}/v1/log-likelihood", json={"inputs": rows.tolist()}, timeout=30
    )
    assert response.status_code == 200
    return np.array(response.json()["log_likelihood"])


def test_health_and_metadata(client: triton.InferenceServerClient, manifest: Manifest) -> None:
    model_version = manifest.onnx.sha256[:12]
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(manifest.name)
    assert client.is_model_ready(manifest.name, model_version)
    assert not client.is_model_ready("other")
    assert client.get_server_metadata() == {
        "name": "made-serve",
        "version": version("made-serve"),
        "extensions": ["binary_tensor_data", "model_repository"],
    }
    assert client.get_model_metadata(manifest.name, model_version) == {
        "name": manifest.name,
        "versions": [model_version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, manifest.dim]}],
        "outputs": [{"name": "log_likelihood", "datatype": "FP64", "shape": [-1]}],
    }
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.get_model_metadata("other")


@pytest.mark.parametrize("datatype", list(DTYPES))
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_infer_matches_v1(
    client: triton.InferenceServerClient,
    server: str,
    manifest: Manifest,
    rows: np.ndarray,
    datatype: str,
    binary_in: bool,
    binary_out: bool,
) -> None:
    tensor = triton.InferInput("x", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(DTYPES[datatype]), binary_data=binary_in)
    wanted = triton.InferRequestedOutput("log_likelihood", binary_data=binary_out)
    result = client.infer(manifest.name, [tensor], outputs=[wanted], request_id="42")
    response = result.get_response()
    assert (response["id"], response["model_name"]) == ("42", manifest.name)
    output = result.get_output("log_likelihood")
    assert (output["datatype"], output["shape"]) == ("FP64", [len(rows)])
    assert ("binary_data_size" in output.get("parameters", {})) is binary_out
    log_likelihood = result.as_numpy("log_likelihood")
    assert log_likelihood.dtype == np.float64
    np.testing.assert_allclose(log_likelihood, v1_log_likelihood(server, rows), rtol=0, atol=1e-6)


def test_infer_with_the_clients_defaults(
    client: triton.InferenceServerClient, server: str, manifest: Manifest, rows: np.ndarray
) -> None:
    """No requested outputs: the client asks for binary_data_output; binary inputs by default."""
    tensor = triton.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows.astype(np.float32))
    result = client.infer(manifest.name, [tensor], model_version=manifest.onnx.sha256[:12])
    assert "binary_data_size" in result.get_output("log_likelihood")["parameters"]
    np.testing.assert_allclose(
        result.as_numpy("log_likelihood"), v1_log_likelihood(server, rows), rtol=0, atol=1e-6
    )


def test_protocol_errors_reach_the_client(
    client: triton.InferenceServerClient, manifest: Manifest, rows: np.ndarray
) -> None:
    wrong = triton.InferInput("x", [len(rows), manifest.dim - 1], "BOOL")
    wrong.set_data_from_numpy(rows[:, 1:].astype(np.bool_))
    with pytest.raises(InferenceServerException, match=r"input 'x': shape must be") as caught:
        client.infer(manifest.name, [wrong])
    assert caught.value.status() == "400"
    twos = triton.InferInput("x", list(rows.shape), "INT32")
    twos.set_data_from_numpy((rows * 2).astype(np.int32))
    with pytest.raises(InferenceServerException, match=r"input 'x': values must be 0 or 1"):
        client.infer(manifest.name, [twos])


def raw_binary(server: str, path: str, header: dict, data: bytes, length: int | None = None):
    """A binary-extension POST without a Content-Type, as tritonclient sends one."""
    json_part = orjson.dumps(header)
    claimed = str(len(json_part) if length is None else length)
    return httpx.post(
        f"http://{server}{path}",
        content=json_part + data,
        headers={"Inference-Header-Content-Length": claimed},
        timeout=30,
    )


def test_raw_binary_errors_are_400_with_the_protocol_body(
    server: str, manifest: Manifest, rows: np.ndarray
) -> None:
    path = f"/v2/models/{manifest.name}/infer"
    data = rows.astype(np.bool_).tobytes()

    def header(size: int, datatype: str = "BOOL") -> dict:
        tensor = {"name": "x", "shape": list(rows.shape), "datatype": datatype}
        return {"inputs": [tensor | {"parameters": {"binary_data_size": size}}]}

    cases = [
        ("size not shape x datatype", raw_binary(server, path, header(len(data), "FP32"), data)),
        ("size past the data", raw_binary(server, path, header(len(data) + 1), data)),
        ("data past the size", raw_binary(server, path, header(len(data)), data + b"\1")),
        ("header length past the body", raw_binary(server, path, header(len(data)), data, 10**5)),
    ]
    for label, response in cases:
        assert response.status_code == 400, label
        assert set(response.json()) == {"error"}, label
    messages = [response.json()["error"] for _, response in cases]
    assert all("input 'x'" in message for message in messages[:3]), messages
    assert "Inference-Header-Content-Length" in messages[3]
    good = raw_binary(server, path, header(len(data)), data)
    assert good.status_code == 200 and "content-type" not in good.request.headers
