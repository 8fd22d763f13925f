"""Read a request body once: media type, size limit (413 before reading it all), orjson, schema."""

from typing import TypeVar

import numpy as np
import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.codec import decode_rows, rows_from_text, split_binary_inputs
from service.errors import BodyTooLarge, InvalidBody, InvalidField, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)
JSON = "application/json"


def media_type(content_type: str) -> str:
    """'application/json' from 'Application/JSON; charset=utf-8'."""
    return content_type.split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    kind = media_type(request.headers.get("content-type", ""))
    if kind != JSON:
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {kind or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, model: type[M]) -> M:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidField((), f"body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidField(tuple(first["loc"]), first["msg"]) from None


def booleans_outside_options(raw: bytes, request: BaseModel) -> bool:
    """True unless every JSON true/false in the body is one of the request's boolean options.

    Lets the row decoder skip its per-element boolean check on the common path.
    """
    literals = raw.count(b"true") + raw.count(b"false")
    options = sum(isinstance(v, bool) for k, v in request if k in request.model_fields_set)
    return literals != options


def parse_rows_body(
    raw: bytes, model: type[M], dim: int, image_shape: tuple[int, int] | None
) -> tuple[M, np.ndarray]:
    """Parse a body whose ``inputs`` are rows (null allowed); rows written as plain 0/1 digits
    are decoded from the bytes and never become Python objects."""
    split = split_binary_inputs(raw)
    if split is not None:
        rows = rows_from_text(split[0], dim, image_shape)
        if rows is not None:
            return parse_body(split[1], model), rows
    body = parse_body(raw, model)
    may_hold_booleans = booleans_outside_options(raw, body)
    return body, decode_rows(body.inputs, dim, image_shape, True, may_hold_booleans)
