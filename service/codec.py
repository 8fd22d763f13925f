"""Decode JSON rows into numpy without per-element Python work on the common path.

A valid batch of 0/1 numbers goes straight through ``np.array`` (C speed); anything else (nulls,
ragged rows, image-shaped rows mixed with flat ones, booleans, strings, other numbers) falls
back to a row-by-row check whose only purpose is an error message that names the culprit.
"""

import numpy as np

from service.errors import InvalidField


def decode_rows(
    value: object,
    dim: int,
    image_shape: tuple[int, int] | None,
    allow_missing: bool,
    may_hold_booleans: bool = True,
    field: str = "inputs",
) -> np.ndarray:
    """JSON rows -> [B, D] float32 in {0, 1}, NaN for null where ``allow_missing``.

    Rows are flat (D values) or, for image models, image-shaped ([H][W] values).
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
                good = (flat == 0) | (flat == 1)
                if good.all():
                    return flat.astype(np.float32)
    return _checked_rows(value, dim, image_shape, allow_missing, field)


def _reshape(array: np.ndarray, dim: int, image_shape: tuple[int, int] | None) -> np.ndarray | None:
    if array.ndim == 2 and array.shape[1] == dim:
        return array
    if image_shape and array.ndim == 3 and array.shape[1:] == image_shape:
        return array.reshape(len(array), dim)
    return None


def _checked_rows(
    rows: list, dim: int, image_shape: tuple[int, int] | None, allow_missing: bool, field: str
) -> np.ndarray:
    shape_text = f"{dim} values" + (
        f" or {image_shape[0]} rows of {image_shape[1]}" if image_shape else ""
    )
    out = np.empty((len(rows), dim), dtype=np.float32)
    image_rows: bool | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InvalidField((field, i), f"must be an array of {shape_text}")
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
            out[i, j] = _entry(entry, allow_missing, field, i, j, image_shape if is_image else None)
    return out


def _flatten_image(row: list, image_shape: tuple[int, int] | None, field: str, i: int) -> list:
    if image_shape is None:
        raise InvalidField((field, i), "this model has no image shape; send flat rows")
    height, width = image_shape
    if len(row) != height or any(not isinstance(r, list) or len(r) != width for r in row):
        raise InvalidField((field, i), f"image-shaped rows must be {height} rows of {width} values")
    return [entry for line in row for entry in line]


def _entry(
    entry: object,
    allow_missing: bool,
    field: str,
    i: int,
    j: int,
    image_shape: tuple[int, int] | None,
) -> float:
    loc = (field, i, *divmod(j, image_shape[1])) if image_shape else (field, i, j)
    if entry is None:
        if allow_missing:
            return np.nan
        raise InvalidField(loc, "null (missing) is not allowed here; give 0 or 1")
    if isinstance(entry, bool) or not isinstance(entry, int | float) or entry not in (0, 1):
        allowed = "0, 1 or null" if allow_missing else "0 or 1"
        raise InvalidField(loc, f"must be {allowed}, got {entry!r}")
    return float(entry)
