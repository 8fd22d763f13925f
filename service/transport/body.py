"""Read a request body once: media type, size limit (413 before reading it all), orjson, schema."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.contract.schema import Schema
from service.inference.errors import InvalidField, ServiceError
from service.transport.codec import decode_rows, rows_from_text, split_binary_inputs
from service.transport.errors import BodyTooLarge, InvalidBody, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)
JSON = "application/json"
_KEY_END = re.compile(rb'"\s*:')  # how every key in a JSON text ends; a string value never does


def media_type(content_type: str) -> str:
    """'application/json' from 'Application/JSON; charset=utf-8'."""
    return content_type.split(";")[0].strip().lower()


async def read_body(request: Request, limit: int, media_types: tuple[str, ...] = (JSON,)) -> bytes:
    """The body, if its media type is one of ``media_types`` ("" accepts no Content-Type)."""
    kind = media_type(request.headers.get("content-type", ""))
    if kind not in media_types:
        allowed = " or ".join(name or "none" for name in media_types)
        raise UnsupportedMediaType(f"Content-Type must be {allowed}, got {kind or 'none'!r}")
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


@dataclass(frozen=True)
class BodyErrors:
    """How an API answers a body it cannot read: not JSON, not an object, or a field (at its
    location) that fails the schema. /v1 and the V2 protocol differ only in these."""

    not_json: Callable[[str], ServiceError]
    not_object: Callable[[str], ServiceError]
    invalid: Callable[[tuple[str | int, ...], str], ServiceError]


V1_ERRORS = BodyErrors(InvalidBody, lambda message: InvalidField((), message), InvalidField)


def parse_body(raw: bytes | memoryview, model: type[M], errors: BodyErrors = V1_ERRORS) -> M:
    """A JSON object body validated against ``model``; repeated keys are refused on every API."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.not_json(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise errors.not_object(f"body must be a JSON object, got {type(data).__name__}")
    refuse_repeated_keys(raw, data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise errors.invalid(tuple(first["loc"]), first["msg"]) from None


def refuse_repeated_keys(raw: bytes | memoryview, data: object) -> None:
    """422 naming a key that an object of the body repeats; ``data`` is ``raw`` parsed.

    orjson, like JSON's usual reading, keeps a repeated key's last value without a word, and the
    raw-bytes row decoder would read the first: neither is guessed. Cheap: every key ends with
    ``"`` then ``:``, so when the text holds as many of those as the parsed objects have keys, no
    key repeats. Only otherwise (a repeat, or ``":`` inside a string) is the text read again,
    with a hook that sees each object's keys (about four times orjson's time).
    """
    if len(_KEY_END.findall(raw)) == _key_count(data):
        return
    try:
        json.loads(bytes(raw), object_pairs_hook=_unique_keys)
    except RecursionError:
        raise InvalidBody("body nests objects too deeply") from None


def _key_count(data: object) -> int:
    """Keys of the objects in ``data``; a list is only walked up to its first scalar (arrays of
    numbers are long), which may undercount and then costs only the exact check."""
    count, pending = 0, [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            count += len(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            for item in value:
                if not isinstance(item, dict | list):
                    break
                pending.append(item)
    return count


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidField((key,), "appears twice in one object; send each field once")
        seen.add(key)
    return {}  # only the keys matter here


def booleans_outside_options(raw: bytes, request: BaseModel) -> bool:
    """True unless every JSON true/false in the body is one of the request's boolean options.

    Lets the row decoder skip its per-element boolean check on the common path.
    """
    literals = raw.count(b"true") + raw.count(b"false")
    options = sum(isinstance(v, bool) for k, v in request if k in request.model_fields_set)
    return literals != options


def parse_rows_body(
    raw: bytes,
    model: type[M],
    dim: int,
    image_shape: tuple[int, int] | None,
    schema: Schema | None = None,
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
    return body, decode_rows(body.inputs, dim, image_shape, True, may_hold_booleans, schema=schema)
