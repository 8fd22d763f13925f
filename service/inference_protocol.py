"""Open Inference Protocol (KServe V2) bodies, and its input tensor decoded into model rows.

Tensor ``data`` is typed ``Any`` for pydantic and goes straight into numpy; its documented
schema is given explicitly. Protocol errors are ``ProtocolError`` and answer ``{"error": "..."}``.
"""

from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError, WithJsonSchema

from service.errors import ServiceError

INPUT = "x"
OUTPUT = "log_likelihood"
INPUT_DATATYPE = "FP32"  # the ONNX graph's input type; the metadata advertises it
OUTPUT_DATATYPE = "FP64"
# The protocol's numeric and boolean types; any of them is read as 0/1 values. BYTES is not.
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16"}
)

Parameters = dict[str, str | int | float | bool]
TensorData = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "array",
            "description": "Row-major values, flat or nested to the tensor's shape.",
            "items": {},
        }
    ),
]


class ProtocolError(ServiceError):
    """A request the protocol rejects: 400 with the protocol's error body."""

    status_code = 400

    def body(self) -> dict[str, object]:
        return {"error": self.message}


class ModelNotFound(ProtocolError):
    status_code = 404


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: TensorData


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class ProtocolErrorBody(BaseModel):
    error: str


def parse_request(raw: bytes) -> InferenceRequest:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"body must be a JSON object, got {type(data).__name__}")
    try:
        return InferenceRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        raise ProtocolError(f"{where}: {first['msg']}") from None


def check_outputs(request: InferenceRequest) -> None:
    for output in request.outputs or ():
        if output.name != OUTPUT:
            raise ProtocolError(f"unknown output {output.name!r}; the model has {OUTPUT!r}")


def input_rows(request: InferenceRequest, dim: int, max_rows: int) -> np.ndarray:
    """The request's one input ``x`` -> rows [B, D] float32 in {0, 1}."""
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT]:
        problem = f"no input {INPUT!r}" if INPUT not in names else "more than one input"
        raise ProtocolError(
            f"{problem} (got {names}): the model takes exactly one input {INPUT!r} "
            f"of shape [-1, {dim}]"
        )
    return decode_tensor(request.inputs[0], dim, max_rows)


def decode_tensor(tensor: RequestInput, dim: int, max_rows: int) -> np.ndarray:
    """A [B, D] tensor of 0/1 values (flat or nested, row-major) -> float32 rows, or 400."""
    where = f"input {tensor.name!r}"
    if tensor.datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}: datatype {tensor.datatype!r} is not supported; use BOOL, an integer "
            "type or a floating-point type"
        )
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != dim or shape[0] < 1:
        raise ProtocolError(f"{where}: shape must be [B, {dim}] with B >= 1, got {shape}")
    if shape[0] > max_rows:
        raise ProtocolError(f"{where}: has {shape[0]} rows, the limit is {max_rows}")
    if not isinstance(tensor.data, list):
        raise ProtocolError(f"{where}: data must be a JSON array")
    try:
        array = np.array(tensor.data)
    except ValueError:
        raise ProtocolError(f"{where}: data is ragged; nest it as {shape} or flatten it") from None
    if array.shape not in (tuple(shape), (shape[0] * dim,)):
        raise ProtocolError(
            f"{where}: data has shape {list(array.shape)}; expected {shape} nested "
            f"or {shape[0] * dim} values flat"
        )
    if array.dtype.kind not in "biuf":
        raise ProtocolError(f"{where}: data must hold numbers or booleans")
    rows = array.reshape(shape[0], dim)
    if not ((rows == 0) | (rows == 1)).all():
        bad = tuple(int(i) for i in np.argwhere((rows != 0) & (rows != 1))[0])
        raise ProtocolError(f"{where}: values must be 0 or 1; element {list(bad)} is {rows[bad]}")
    return rows.astype(np.float32)


def log_likelihood_output(values: np.ndarray) -> dict[str, object]:
    """[B] log p(x) in nats as the protocol's response tensor."""
    return {"name": OUTPUT, "shape": [len(values)], "datatype": OUTPUT_DATATYPE, "data": values}
