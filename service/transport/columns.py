"""Columns of a schema model as the transport sees them: names that key rows written as JSON
objects, and the range a real-valued (``gaussian_mixture``) column takes.

A real value is taken within ``MAX_STANDARD_SCORES`` training standard deviations of its
column's training mean (and within float32, the graph's input type): the graph squares the
standardized value in float32, so much further out its log density would overflow to -inf and the
mixture's to NaN, which JSON cannot carry.
"""

import numpy as np

from service.contract.schema import Schema
from service.inference.errors import InvalidField

MAX_STANDARD_SCORES = 1e12
FLOAT32_MAX = float(np.finfo(np.float32).max)


def column_names(schema: Schema | None) -> tuple[str, ...] | None:
    """Every dimension's name, in order; None unless each one has a name."""
    if schema is None or any(d.name is None for d in schema.dimensions):
        return None
    return tuple(str(d.name) for d in schema.dimensions)


def is_table(schema: Schema | None) -> bool:
    """A tabular model: real-valued columns among others, every one named. Its sampled and
    completed rows are answered as objects keyed by column name."""
    return schema is not None and schema.has_continuous and column_names(schema) is not None


def real_bounds(schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """[D] lowest and highest value each dimension's real values may take (only a continuous
    dimension's are used)."""
    reach = MAX_STANDARD_SCORES * schema.scales
    low = np.clip(schema.means - reach, -FLOAT32_MAX, FLOAT32_MAX)
    high = np.clip(schema.means + reach, -FLOAT32_MAX, FLOAT32_MAX)
    return low, high


def real_range_text(schema: Schema, d: int) -> str:
    """What dimension d (continuous) takes, for error messages and the served document."""
    low, high = real_bounds(schema)
    return (
        f"a finite number within {MAX_STANDARD_SCORES:.0e} training standard deviations of its "
        f"training mean, [{low[d]:.7g}, {high[d]:.7g}]"
    )


def first_out_of_range(schema: Schema, rows: np.ndarray) -> tuple[int, int] | None:
    """(row, dimension) of the first continuous entry that is not finite or lies outside
    ``real_bounds``; NaN (missing) passes. None when all are in range."""
    if not schema.has_continuous:
        return None
    values = np.asarray(rows, dtype=np.float64)[:, schema.continuous]
    low, high = real_bounds(schema)
    cols = np.flatnonzero(schema.continuous)
    with np.errstate(invalid="ignore"):
        bad = (values < low[cols]) | (values > high[cols]) | np.isinf(values)
    if not bad.any():
        return None
    row, col = np.argwhere(bad)[0]
    return int(row), int(cols[col])


def ordered_entries(row: dict, schema: Schema | None, loc: tuple) -> list:
    """A row written as an object keyed by column name -> its entries in dimension order; 422
    naming the column for an unknown or absent one (null, not absence, marks a missing entry)."""
    names = column_names(schema)
    if names is None:
        raise InvalidField(
            loc,
            "this model has no column names (its dimensions are not all named); send the row "
            "as an array of its values in dimension order",
        )
    unknown = [key for key in row if key not in names]
    if unknown:
        raise InvalidField(
            (*loc, unknown[0]), f"unknown column {unknown[0]!r}; the columns are {list(names)}"
        )
    for d, name in enumerate(names):
        if name not in row:
            raise InvalidField(
                (*loc, name),
                f"column {name!r} (dimension {d}) is absent; give its value, or null where a "
                "missing entry is allowed",
            )
    return [row[name] for name in names]
