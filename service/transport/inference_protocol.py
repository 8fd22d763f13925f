"""Open Inference Protocol (KServe V2) bodies, its binary tensor data extension, and its input
tensor decoded into model rows.

Tensor ``data`` is typed ``Any`` for pydantic and goes straight into numpy; its documented
schema is given explicitly. Under the binary tensor data extension the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw little-endian tensors, each announced by
its ``binary_data_size`` parameter. Protocol errors are ``ProtocolError`` and answer
``{"error": "..."}``.
"""

from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
)

from service.contract.schema import Schema
from service.transport.body import BodyErrors, parse_body
from service.transport.columns import first_out_of_range, real_range_text
from service.transport.errors import ProtocolError

INPUT = "x"
OUTPUT = "log_likelihood"
INPUT_DATATYPE = "FP32"  # the ONNX graph's input type; the metadata advertises it
OUTPUT_DATATYPE = "FP64"
BINARY_EXTENSION = "binary_tensor_data"
HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
# The protocol's numeric and boolean types (BYTES is not one), each with the little-endian numpy
# type its binary data has. BOOL is one byte per element; BF16 is the upper half of a float32.
BINARY_DTYPES = {
    "BOOL": "u1",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "BF16": "<u2",
}
DATATYPES = frozenset(BINARY_DTYPES)

Parameters = dict[str, str | int | float | bool]
TensorData = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "array",
            "description": "Row-major values, flat or nested to the tensor's shape; absent when "
            "parameters.binary_data_size announces the tensor as binary data after the JSON.",
            "items": {},
        }
    ),
]


PROTOCOL_ERRORS = BodyErrors(
    ProtocolError,
    ProtocolError,
    lambda loc, message: ProtocolError(f"{'.'.join(map(str, loc)) or 'body'}: {message}"),
)


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
    parameters: dict[str, Any] | None = Field(
        None, description="A schema model's dimensions (absent for a model of 0/1 dimensions)."
    )

    @model_serializer(mode="wrap")
    def _binary_answers_as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        if data.get("parameters") is None:
            data.pop("parameters", None)
        return data


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: TensorData = None


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = Field(
        None, description="binary_data: true returns this output as binary data."
    )


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = Field(
        None, description="binary_data_output: true returns every output as binary data."
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float] | None = Field(
        None, description="Absent for a binary output, whose parameters give binary_data_size."
    )


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class ProtocolErrorBody(BaseModel):
    error: str


def parse_request(raw: bytes, header_length: str | None) -> tuple[InferenceRequest, memoryview]:
    """The body -> (its JSON request, the binary tensor data after the JSON header).

    ``header_length`` is the ``Inference-Header-Content-Length`` header: without it the whole body
    is JSON and there is no binary data.
    """
    json_part, binary = split_body(raw, header_length)
    return parse_body(json_part, InferenceRequest, PROTOCOL_ERRORS), binary


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview]:
    """(the JSON header, the binary data after it); without a header length, all of it is JSON."""
    if header_length is None:
        return raw, memoryview(b"")
    if not (header_length.isascii() and header_length.isdigit()):
        raise ProtocolError(f"{HEADER_LENGTH} must be a byte count, got {header_length!r}")
    size = int(header_length)
    if size > len(raw):
        raise ProtocolError(f"{HEADER_LENGTH} {size} exceeds the body's {len(raw)} bytes")
    view = memoryview(raw)
    return view[:size], view[size:]


def binary_output(request: InferenceRequest) -> bool:
    """Whether the output goes back as binary data: its own ``binary_data`` parameter if given,
    else the request's ``binary_data_output``; 400 for an unknown output or a non-boolean flag."""
    binary = flag(request.parameters, "binary_data_output", "parameters")
    for i, output in enumerate(request.outputs or ()):
        if output.name != OUTPUT:
            raise ProtocolError(f"unknown output {output.name!r}; the model has {OUTPUT!r}")
        own = flag(output.parameters, "binary_data", f"outputs.{i}.parameters")
        if own is not None:
            binary = own
    return bool(binary)


def flag(parameters: Parameters | None, name: str, where: str) -> bool | None:
    value = (parameters or {}).get(name)
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(f"{where}.{name} must be true or false, got {value!r}")
    return value


def input_rows(
    request: InferenceRequest,
    binary: memoryview,
    dim: int,
    max_rows: int,
    schema: Schema | None = None,
) -> np.ndarray:
    """The request's one input ``x`` (JSON or binary data) -> rows [B, D] float32 in {0, 1}, or
    levels of the ``schema``."""
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT]:
        problem = f"no input {INPUT!r}" if INPUT not in names else "more than one input"
        raise ProtocolError(
            f"{problem} (got {names}): the model takes exactly one input {INPUT!r} "
            f"of shape [-1, {dim}]"
        )
    return decode_tensor(request.inputs[0], binary, dim, max_rows, schema)


def decode_tensor(
    tensor: RequestInput,
    binary: memoryview,
    dim: int,
    max_rows: int,
    schema: Schema | None = None,
) -> np.ndarray:
    """A [B, D] tensor of 0/1 values, or of levels of the ``schema`` (JSON flat or nested, or
    binary; row-major) -> float32 rows, or 400. ``binary`` is all the binary data of the request,
    which this one input must use."""
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
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        array = binary_tensor(tensor, size, binary, where)
    elif binary:
        raise ProtocolError(
            f"{len(binary)} bytes follow the JSON header, but {where} has no binary_data_size"
        )
    else:
        array = json_tensor(tensor, where)
    rows = array.reshape(shape[0], dim)
    if schema is not None:
        refuse_invalid(schema, rows, where)
        return rows.astype(np.float32)
    if not ((rows == 0) | (rows == 1)).all():
        bad = tuple(int(i) for i in np.argwhere((rows != 0) & (rows != 1))[0])
        raise ProtocolError(f"{where}: values must be 0 or 1; element {list(bad)} is {rows[bad]}")
    return rows.astype(np.float32)


def refuse_invalid(schema: Schema, rows: np.ndarray, where: str) -> None:
    """400 naming the element and its column for an entry that is not a level of its dimension,
    or for a continuous one a finite number within its range."""
    bad = schema.first_invalid(rows) or first_out_of_range(schema, rows)
    if bad is None:
        return
    row, col = bad
    dimension = schema.dimensions[col]
    takes = (
        real_range_text(schema, col)
        if schema.continuous[col]
        else f"an integer 0..{dimension.levels - 1}"
    )
    raise ProtocolError(
        f"{where}: element [{row}, {col}] is {rows[row, col]}; dimension "
        f"{schema.column(col)} ({dimension.family}) takes {takes}"
    )


def json_tensor(tensor: RequestInput, where: str) -> np.ndarray:
    """The tensor's JSON ``data``, nested to its shape or flat, as an array."""
    shape = tensor.shape
    if tensor.data is None:
        raise ProtocolError(f"{where}: give data, or parameters.binary_data_size and binary data")
    if not isinstance(tensor.data, list):
        raise ProtocolError(f"{where}: data must be a JSON array")
    try:
        array = np.array(tensor.data)
    except ValueError:
        raise ProtocolError(f"{where}: data is ragged; nest it as {shape} or flatten it") from None
    if array.shape not in (tuple(shape), (shape[0] * shape[1],)):
        raise ProtocolError(
            f"{where}: data has shape {list(array.shape)}; expected {shape} nested "
            f"or {shape[0] * shape[1]} values flat"
        )
    if array.dtype.kind not in "biuf":
        raise ProtocolError(f"{where}: data must hold numbers or booleans")
    return array


def binary_tensor(tensor: RequestInput, size: object, binary: memoryview, where: str) -> np.ndarray:
    """The tensor's ``size`` bytes of binary data, which must be exactly shape x datatype and all
    that follows the JSON header (the model has one input), as a flat array."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"{where}: binary_data_size must be a byte count, got {size!r}")
    if tensor.data is not None:
        raise ProtocolError(f"{where}: has both data and binary_data_size; send one of them")
    dtype = np.dtype(BINARY_DTYPES[tensor.datatype])
    expected = tensor.shape[0] * tensor.shape[1] * dtype.itemsize
    if size != expected:
        raise ProtocolError(
            f"{where}: binary_data_size {size} does not match shape {tensor.shape} of "
            f"{tensor.datatype} ({expected} bytes)"
        )
    if size != len(binary):
        hint = "" if binary else f"; give the JSON's length in {HEADER_LENGTH}"
        raise ProtocolError(
            f"{where}: binary_data_size {size}, but {len(binary)} bytes follow the JSON header"
            + hint
        )
    array = np.frombuffer(binary, dtype=dtype)
    if tensor.datatype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def log_likelihood_output(values: np.ndarray) -> dict[str, object]:
    """[B] log p(x) in nats as the protocol's response tensor."""
    return {"name": OUTPUT, "shape": [len(values)], "datatype": OUTPUT_DATATYPE, "data": values}


def binary_response(fields: dict[str, object], values: np.ndarray) -> tuple[bytes, int]:
    """[B] log p(x) in nats as a binary output after the JSON header: (body, header length)."""
    data = values.astype("<f8").tobytes()
    output = {
        "name": OUTPUT,
        "shape": [len(values)],
        "datatype": OUTPUT_DATATYPE,
        "parameters": {"binary_data_size": len(data)},
    }
    header = orjson.dumps({**fields, "outputs": [output]})
    return header + data, len(header)
