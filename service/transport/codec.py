"""Decode JSON rows into numpy without per-element Python work on the common path.

Fastest: rows written as plain 0/1 digits are read from the raw body bytes (a C-speed shape
check, then ``np.frombuffer``) and never become Python objects. Next: parsed rows of 0/1 numbers
go through ``np.array``. Anything else (nulls, ragged rows, image-shaped rows mixed with flat
ones, booleans, strings, other numbers) falls back to a row-by-row check whose only purpose is an
error message that names the culprit.
"""

import functools
import math
import re

import numpy as np

from service.contract.schema import Categorical, GaussianMixture, Schema
from service.inference.errors import InvalidField
from service.transport.columns import (
    column_names,
    first_out_of_range,
    ordered_entries,
    real_bounds,
    real_range_text,
)

_BINARY_INPUTS = re.compile(rb'"inputs"\s*:\s*(\[[\[\]\s,01]*\])')
_WHITESPACE = b" \t\r\n"
_DIGITS_AS_SLOTS = bytes.maketrans(b"01", b"dd")


def split_binary_inputs(raw: bytes) -> tuple[bytes, bytes] | None:
    """(the inputs array's text, the body with that array replaced by 0) when the array holds
    only brackets, commas, white space and the digits 0 and 1; None otherwise."""
    if raw.count(b'"inputs"') != 1:
        return None
    match = _BINARY_INPUTS.search(raw)
    if match is None:
        return None
    return match.group(1), raw[: match.start(1)] + b"0" + raw[match.end(1) :]


def rows_from_text(text: bytes, dim: int, image_shape: tuple[int, int] | None) -> np.ndarray | None:
    """[B, D] float32 from JSON text that is exactly B flat (or image-shaped) rows of single 0/1
    digits; None for anything else, which the general decoder then handles."""
    compact = text.translate(None, _WHITESPACE)
    digits = compact.translate(None, b"[],")
    if not digits or len(digits) % dim:
        return None
    count = len(digits) // dim
    image = compact.startswith(b"[[[")
    if image and image_shape is None:
        return None
    if compact.translate(_DIGITS_AS_SLOTS) != _template(count, dim, image_shape if image else None):
        return None
    return (np.frombuffer(digits, dtype=np.uint8) - ord("0")).astype(np.float32).reshape(count, dim)


@functools.lru_cache(maxsize=256)
def _template(count: int, dim: int, image_shape: tuple[int, int] | None) -> bytes:
    """The compact JSON of ``count`` rows with every entry written as ``d``."""
    if image_shape is None:
        row = b"[" + b",".join([b"d"] * dim) + b"]"
    else:
        line = b"[" + b",".join([b"d"] * image_shape[1]) + b"]"
        row = b"[" + b",".join([line] * image_shape[0]) + b"]"
    return b"[" + b",".join([row] * count) + b"]"


def decode_rows(
    value: object,
    dim: int,
    image_shape: tuple[int, int] | None,
    allow_missing: bool,
    may_hold_booleans: bool = True,
    field: str = "inputs",
    schema: Schema | None = None,
) -> np.ndarray:
    """JSON rows -> [B, D] float32 in {0, 1} (or values of the ``schema``: integer levels, a
    labelled categorical's labels, a continuous dimension's numbers), NaN for null where
    ``allow_missing``.

    Rows are flat (D values) or, for image models, image-shaped ([H][W] values); for a model
    whose dimensions are all named, a row may also be an object keyed by column name.
    ``may_hold_booleans=False`` is the caller's promise (from the raw body) that the rows hold no
    JSON true/false, which numpy would otherwise silently read as 1/0.
    """
    if not isinstance(value, list) or not value:
        raise InvalidField((field,), "must be a non-empty array of rows")
    if not may_hold_booleans:
        try:
            array = np.array(value)
        except ValueError:  # ragged: let the row-by-row check say where
            array = None
        if array is not None and array.dtype.kind in "iuf":
            flat = _reshape(array, dim, image_shape)
            if flat is not None:
                if schema is None:
                    good = ((flat == 0) | (flat == 1)).all()
                else:
                    good = (
                        schema.first_invalid(flat) is None
                        and first_out_of_range(schema, flat) is None
                    )
                if good:
                    return flat.astype(np.float32)
    return _checked_rows(value, dim, image_shape, allow_missing, field, schema)


def _reshape(array: np.ndarray, dim: int, image_shape: tuple[int, int] | None) -> np.ndarray | None:
    if array.ndim == 2 and array.shape[1] == dim:
        return array
    if image_shape and array.ndim == 3 and array.shape[1:] == image_shape:
        return array.reshape(len(array), dim)
    return None


def _checked_rows(
    rows: list,
    dim: int,
    image_shape: tuple[int, int] | None,
    allow_missing: bool,
    field: str,
    schema: Schema | None,
) -> np.ndarray:
    shape_text = f"{dim} values" + (
        f" or {image_shape[0]} rows of {image_shape[1]}" if image_shape else ""
    )
    out = np.empty((len(rows), dim), dtype=np.float32)
    image_rows: bool | None = None
    names = column_names(schema)  # once, not per row: rows may be objects keyed by these
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            entries = ordered_entries(row, schema, (field, i))
            for j, entry in enumerate(entries):
                out[i, j] = _level(entry, allow_missing, (field, i, names[j]), schema, j)
            continue
        if not isinstance(row, list):
            objects = " or an object keyed by column name" if names else ""
            raise InvalidField((field, i), f"must be an array of {shape_text}{objects}")
        is_image = bool(row) and isinstance(row[0], list)
        if image_rows is None:
            image_rows = is_image
        elif is_image != image_rows:
            raise InvalidField(
                (field, i), "mixes flat and image-shaped rows; send all rows in one form"
            )
        if is_image:
            flat = _flatten_image(row, image_shape, field, i)
        elif len(row) != dim:
            raise InvalidField((field, i), f"has {len(row)} values, expected {shape_text}")
        else:
            flat = row
        for j, entry in enumerate(flat):
            loc = (field, i, *divmod(j, image_shape[1])) if is_image else (field, i, j)
            if schema is None:
                out[i, j] = _entry(entry, allow_missing, loc)
            else:
                out[i, j] = _level(entry, allow_missing, loc, schema, j)
    return out


def _flatten_image(row: list, image_shape: tuple[int, int] | None, field: str, i: int) -> list:
    if image_shape is None:
        raise InvalidField((field, i), "this model has no image shape; send flat rows")
    height, width = image_shape
    if len(row) != height or any(not isinstance(r, list) or len(r) != width for r in row):
        raise InvalidField((field, i), f"image-shaped rows must be {height} rows of {width} values")
    return [entry for line in row for entry in line]


def _entry(entry: object, allow_missing: bool, loc: tuple) -> float:
    if entry is None:
        if allow_missing:
            return np.nan
        raise InvalidField(loc, "null (missing) is not allowed here; give 0 or 1")
    if isinstance(entry, bool) or not isinstance(entry, int | float) or entry not in (0, 1):
        allowed = "0, 1 or null" if allow_missing else "0 or 1"
        raise InvalidField(loc, f"must be {allowed}, got {entry!r}")
    return float(entry)


def _level(entry: object, allow_missing: bool, loc: tuple, schema: Schema, j: int) -> float:
    """One entry of dimension j under a schema: an integer level, or a label of a labelled
    categorical; the message names the dimension (and its column name) and what it takes."""
    dimension = schema.dimensions[j]
    if isinstance(dimension, GaussianMixture):
        return _real(entry, allow_missing, loc, schema, j)
    labels = dimension.labels if isinstance(dimension, Categorical) else None
    takes = f"an integer 0..{dimension.levels - 1}" + (
        f" or one of the labels {labels}" if labels else ""
    )
    where = f"dimension {schema.column(j)} ({dimension.family})"
    if entry is None:
        if allow_missing:
            return np.nan
        raise InvalidField(loc, f"null (missing) is not allowed here; {where} takes {takes}")
    if isinstance(entry, str):
        if labels and entry in labels:
            return float(labels.index(entry))
        problem = "unknown label" if labels else "a label, but it has none"
        raise InvalidField(loc, f"{where} takes {takes}; got {entry!r}, {problem}")
    if (
        isinstance(entry, bool)
        or not isinstance(entry, int | float)
        or entry != int(entry)
        or not 0 <= entry < dimension.levels
    ):
        raise InvalidField(loc, f"{where} takes {takes}, got {entry!r}")
    return float(entry)


def _real(entry: object, allow_missing: bool, loc: tuple, schema: Schema, j: int) -> float:
    """One entry of a continuous dimension j: a JSON number (int or float) within its range."""
    takes = real_range_text(schema, j)
    where = f"dimension {schema.column(j)} (gaussian_mixture)"
    if entry is None:
        if allow_missing:
            return np.nan
        raise InvalidField(loc, f"null (missing) is not allowed here; {where} takes {takes}")
    if isinstance(entry, bool) or not isinstance(entry, int | float):
        raise InvalidField(loc, f"{where} takes a number, got {entry!r}")
    low, high = real_bounds(schema)
    if not (math.isfinite(entry) and low[j] <= entry <= high[j]):
        raise InvalidField(loc, f"{where} takes {takes}, got {entry!r}")
    return float(entry)
