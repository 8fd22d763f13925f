"""Tables with a header (CSV or Parquet files, or built-in DataFrames) as a ``Dataset``: each
column becomes one dimension, named after it, of a family declared in a schema file or inferred.

Rows are numbered as data rows from 1 (the header not counted: a CSV's row r is its line r + 1),
in the file as read, before any split or dropped rows. Inference, when no schema file declares the
columns: strings and booleans are categorical (labels: every split's distinct values, sorted);
exactly {0, 1} is bernoulli; integers >= 0 with at most MAX_ORDINAL_DISTINCT distinct values and
a maximum below MAX_ORDINAL_LEVELS are ordinal of max + 1 levels; any other number is a Gaussian
mixture standardized by the training split's mean and standard deviation (ddof 0).
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from model.data import (
    OWN_DATA_SPLIT,
    SCHEMA_FILE,
    SCHEMA_SUFFIX,
    SPLITS,
    DataError,
    Dataset,
    _read_schema_file,
)
from model.table_sources import TABLE_SOURCES
from service.contract.schema import (
    DEFAULT_COMPONENTS,
    Bernoulli,
    Categorical,
    Family,
    GaussianMixture,
    Ordinal,
    Schema,
)

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
MISSING_POLICIES = ("refuse", "drop")
# An integer column is ordinal only when it looks like a rating or a small count: more distinct
# values, or a larger maximum (every level 0..max gets a bin), and it is taken as a real number.
MAX_ORDINAL_DISTINCT = 20
MAX_ORDINAL_LEVELS = 64
SPLIT_SEED = 0  # the seeded shuffle that splits a single table 80/10/10
BINARIZATION = "none: a table's values (categories as class indices)"
FITTED = frozenset({"mean", "scale"})  # a Gaussian mixture's fields fitted on the training split
# A schema file's columns, and for each Gaussian mixture the fields it leaves to fit.
Declared = tuple[list[Family], dict[str, frozenset[str]]]


def load_table(path: Path, missing: str = "refuse") -> Dataset:
    """``path``: a .csv/.parquet file (split 80/10/10 by a seeded shuffle, its schema file
    ``<stem>.schema.json`` beside it) or a folder of train, valid and test tables (its schema
    file ``schema.json``). Without a schema file the columns' families are inferred."""
    if path.is_dir():
        files = {split: _split_file(path, split) for split in SPLITS}
        schema_file = path / SCHEMA_FILE
    elif path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: expected a .csv or .parquet table with a header")
        files = {"rows": path}
        schema_file = path.with_name(path.stem + SCHEMA_SUFFIX)
    else:
        raise DataError(f"{path} does not exist")
    declared = _declared_columns(schema_file) if schema_file.is_file() else None
    columns = declared[0] if declared else []
    text = {c.name for c in columns if isinstance(c, Categorical) and c.labels}
    frames = {key: _read_table(file, text) for key, file in files.items()}
    where = {key: str(file) for key, file in files.items()}
    origin = str(schema_file) if declared else "inferred"
    return table_dataset("table", frames, where, str(path), declared, origin, missing)


def load_builtin_table(name: str, missing: str = "refuse") -> Dataset:
    """One of TABLE_SOURCES, read from its installed package, its columns' families inferred."""
    loader, location = TABLE_SOURCES[name]
    frame = loader().reset_index(drop=True)
    return table_dataset(
        name, {"rows": frame}, {"rows": location}, location, None, "inferred", missing
    )


def table_dataset(
    name: str,
    frames: dict[str, pd.DataFrame],
    where: dict[str, str],
    location: str,
    declared: Declared | None,
    origin: str,
    missing: str,
) -> Dataset:
    """The Dataset of ``frames`` (one "rows" frame to split, or train/valid/test), each named in
    errors by ``where``; ``declared``, the schema file's columns, or None to infer them."""
    if missing not in MISSING_POLICIES:
        raise DataError(f"missing={missing!r}: choose {' or '.join(MISSING_POLICIES)}")
    frames = _same_columns(frames, where)
    frames = {key: _complete_rows(frame, where[key], missing) for key, frame in frames.items()}
    _refuse_constant_columns(frames, location)
    if declared is None:
        dimensions = _infer_columns(pd.concat(frames.values(), ignore_index=True))
        to_fit = {d.name: FITTED for d in dimensions if isinstance(d, GaussianMixture)}
    else:
        dimensions, to_fit = _in_header_order(declared[0], frames, where), declared[1]
    try:
        schema = Schema(dimensions)
    except ValueError as exc:
        raise DataError(f"{location}: {exc}") from exc
    values = {key: _values(frame, schema, where[key]) for key, frame in frames.items()}
    if "rows" in values:
        values = _split(values["rows"])
    for split, rows in values.items():
        if len(rows) == 0:
            raise DataError(f"{location}: split {split!r} is empty: too few rows")
    schema = Schema(_fit_scales(dimensions, to_fit, values["train"], location))
    for line in describe_columns(schema):
        log.info("%s (%s): %s", name, origin, line)
    return Dataset(
        name=name,
        binarization=BINARIZATION,
        location=location,
        schema=schema,
        schema_origin=origin,
        **{split: values[split].astype(np.float32) for split in SPLITS},
    )


def describe_columns(schema: Schema) -> list[str]:
    """One line per column: its name, family and what the family needs."""
    lines = []
    for d, dim in enumerate(schema.dimensions):
        if isinstance(dim, Categorical):
            detail = f"classes {dim.classes}" + (
                f", labels {', '.join(dim.labels)}" if dim.labels else ""
            )
        elif isinstance(dim, Ordinal):
            detail = f"levels {dim.levels}, components {dim.components}"
        elif isinstance(dim, GaussianMixture):
            detail = f"components {dim.components}, mean {dim.mean:.6g}, scale {dim.scale:.6g}"
        else:
            detail = "0/1"
        lines.append(f"column {schema.column(d)}: {dim.family} ({detail})")
    return lines


# -- reading ---------------------------------------------------------------------------------


def _split_file(folder: Path, split: str) -> Path:
    for suffix in SUFFIXES:
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise DataError(f"{folder} has no {split}.csv or {split}.parquet")


def _read_table(path: Path, text_columns: set[str]) -> pd.DataFrame:
    """A table's cells, its index the data rows 0.. as read; ``text_columns`` (a schema file's
    labelled columns) are read as text so that their cells compare with the labels."""
    try:
        if path.suffix == ".csv":
            _check_csv_header(path)
            frame = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str), skipinitialspace=True)
        else:
            frame = pd.read_parquet(path, engine="pyarrow").reset_index(drop=True)
    except DataError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path} is not a readable table: {exc}") from exc
    duplicated = frame.columns[frame.columns.duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: duplicate column name {duplicated[0]!r}")
    if len(frame) == 0:
        raise DataError(f"{path}: a header but no data rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _check_csv_header(path: Path) -> None:
    """Refuse a CSV whose first line is not a header of distinct names: pandas would take a
    first row of data as names, and rename a repeated name silently."""
    try:
        first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header line and data rows") from None
    names = [cell.strip() for cell in first.iloc[0]]
    if "" in names:
        raise DataError(f"{path}: header cell {names.index('') + 1} is empty; name every column")
    if all(_is_number(name) for name in names):
        raise DataError(
            f"{path}: the first line ({', '.join(names[:5])}...) holds numbers, not column names: "
            "a table needs a header line (headerless CSVs are --source files)"
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: duplicate column name {name!r} in the header")
        seen.add(name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- checks ----------------------------------------------------------------------------------


def _same_columns(
    frames: dict[str, pd.DataFrame], where: dict[str, str]
) -> dict[str, pd.DataFrame]:
    """The frames with the first one's column order; refuses splits of other columns."""
    first, *others = frames
    columns = list(frames[first].columns)
    for key in others:
        found = set(frames[key].columns)
        lacking, extra = [c for c in columns if c not in found], sorted(found - set(columns))
        if lacking or extra:
            raise DataError(
                f"{where[key]}: its columns differ from {where[first]}'s: "
                + _listing(("lacks {}", lacking), ("has {} besides", extra))
            )
    return {key: frame[columns] for key, frame in frames.items()}


def _complete_rows(frame: pd.DataFrame, where: str, missing: str) -> pd.DataFrame:
    """``frame`` without missing cells: refused (naming the first), or their rows dropped."""
    gaps = frame.isna().to_numpy()
    if gaps.any():
        if missing == "drop":
            keep = ~gaps.any(axis=1)
            log.info("%s: dropped %d of %d rows with a missing cell", where, sum(~keep), len(keep))
            frame = frame[keep]
            if len(frame) == 0:
                raise DataError(f"{where}: every row has a missing cell")
        else:
            row, col = np.argwhere(gaps)[0]
            raise DataError(
                f"{where}: row {frame.index[row] + 1}, column {frame.columns[col]!r}: missing "
                "cell (--missing drop drops the rows that have one)"
            )
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            bad = ~np.isfinite(series.to_numpy(dtype=np.float64))
            if bad.any():
                row = int(np.argmax(bad))
                raise DataError(
                    f"{where}: row {frame.index[row] + 1}, column {column!r}: "
                    f"{series.iloc[row]} is not a finite number"
                )
    return frame


def _refuse_constant_columns(frames: dict[str, pd.DataFrame], location: str) -> None:
    whole = pd.concat(frames.values(), ignore_index=True)
    for column in whole.columns:
        if whole[column].nunique() < 2:
            value = whole[column].iloc[0]
            text = repr(value) if isinstance(value, str) else str(value)
            raise DataError(
                f"{location}: column {column!r} holds the single value {text} "
                "in every row: it tells nothing (and has no scale); drop it"
            )


# -- families --------------------------------------------------------------------------------


def _infer_columns(whole: pd.DataFrame) -> list[Family]:
    """Each column's family from its values in every split (see the module's docstring);
    Gaussian mixtures get their mean and scale later, from the training split."""
    return [_infer_column(str(column), whole[column]) for column in whole.columns]


def _infer_column(name: str, series: pd.Series) -> Family:
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        labels = sorted(series.astype(str).unique())
        return Categorical(name=name, classes=len(labels), labels=labels)
    x = series.to_numpy(dtype=np.float64)
    distinct = np.unique(x)
    if len(distinct) == 2 and distinct[0] == 0 and distinct[1] == 1:
        return Bernoulli(name=name)
    if (
        (distinct == np.round(distinct)).all()
        and distinct[0] >= 0
        and len(distinct) <= MAX_ORDINAL_DISTINCT
        and distinct[-1] < MAX_ORDINAL_LEVELS
    ):
        return Ordinal(name=name, levels=int(distinct[-1]) + 1, components=DEFAULT_COMPONENTS)
    return GaussianMixture(name=name, components=DEFAULT_COMPONENTS)


def _declared_columns(schema_file: Path) -> Declared:
    """A schema file's columns, each named, and the Gaussian mixtures' fields (mean, scale) that
    it leaves to be fitted on the training split."""
    schema = _read_schema_file(schema_file)
    raw = json.loads(schema_file.read_text())["columns"]
    to_fit: dict[str, frozenset[str]] = {}
    for index, (dim, entry) in enumerate(zip(schema.dimensions, raw, strict=True)):
        if not dim.name:
            raise DataError(
                f"schema file {schema_file}: column {index} has no name; a table's columns are "
                "matched by name to its header"
            )
        if isinstance(dim, GaussianMixture):
            to_fit[dim.name] = FITTED - set(entry)
    names = [d.name for d in schema.dimensions]
    repeated = next((n for n in names if names.count(n) > 1), None)
    if repeated:
        raise DataError(f"schema file {schema_file}: column {repeated!r} is declared twice")
    return list(schema.dimensions), to_fit


def _in_header_order(
    declared: list[Family], frames: dict[str, pd.DataFrame], where: dict[str, str]
) -> list[Family]:
    """The declared columns in the header's order; refuses a header column not declared, or a
    declared column not in the header."""
    header = list(next(iter(frames.values())).columns)
    by_name = {d.name: d for d in declared}
    lacking = [n for n in header if n not in by_name]
    unknown = [n for n in by_name if n not in header]
    if lacking or unknown:
        raise DataError(
            f"{next(iter(where.values()))}: the schema file must declare each header column: "
            + _listing(("undeclared {}", lacking), ("not in the header {}", unknown))
        )
    return [by_name[n] for n in header]


def _fit_scales(
    dimensions: list[Family], to_fit: dict[str, frozenset[str]], train: np.ndarray, location: str
) -> list[Family]:
    """The dimensions, each Gaussian mixture's ``to_fit`` fields (mean, scale) being the
    training split's mean and standard deviation (ddof 0): the validation and test rows must not
    leak into what the network sees."""
    fitted = []
    for d, dim in enumerate(dimensions):
        fields = to_fit.get(dim.name or "", frozenset())
        if isinstance(dim, GaussianMixture) and fields:
            column = train[:, d]
            mean = float(column.mean()) if "mean" in fields else dim.mean
            scale = float(column.std()) if "scale" in fields else dim.scale
            if not scale > 0:
                raise DataError(
                    f"{location}: column {dim.name!r} holds the single value {column[0]} in every "
                    "training row: its scale would be 0"
                )
            dim = GaussianMixture(name=dim.name, components=dim.components, mean=mean, scale=scale)
        fitted.append(dim)
    return fitted


# -- values ----------------------------------------------------------------------------------


def _values(frame: pd.DataFrame, schema: Schema, where: str) -> np.ndarray:
    """[N, D] float64: a labelled categorical's cells as class indices, the rest as numbers;
    refuses an unknown label, text in a numeric column, or a value outside its family."""
    columns = []
    for dim in schema.dimensions:
        series = frame[dim.name]
        if isinstance(dim, Categorical) and dim.labels is not None:
            codes = series.astype(str).map({label: i for i, label in enumerate(dim.labels)})
            unknown = codes.isna().to_numpy()
            if unknown.any():
                row = int(np.argmax(unknown))
                raise DataError(
                    f"{where}: row {frame.index[row] + 1}, column {dim.name!r}: "
                    f"{series.iloc[row]!r} is not among its labels "
                    f"({', '.join(map(repr, dim.labels))})"
                )
            columns.append(codes.to_numpy(dtype=np.float64))
        else:
            numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
            text = np.isnan(numbers)
            if text.any():
                row = int(np.argmax(text))
                raise DataError(
                    f"{where}: row {frame.index[row] + 1}, column {dim.name!r}: "
                    f"{series.iloc[row]!r} is not a number ({dim.family})"
                )
            columns.append(numbers)
    values = np.column_stack(columns)
    found = schema.first_invalid(values)
    if found is not None:
        row, d = found
        dim = schema.dimensions[d]
        expected = "0 or 1" if isinstance(dim, Bernoulli) else f"0..{dim.levels - 1}"
        raise DataError(
            f"{where}: row {frame.index[row] + 1}, column {dim.name!r}: {values[row, d]:g} is "
            f"outside its levels {expected} ({dim.family})"
        )
    return values


def _split(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Train, valid and test: OWN_DATA_SPLIT of a seeded shuffle of the rows."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
    n_train = int(OWN_DATA_SPLIT[0] * len(rows))
    n_valid = int(OWN_DATA_SPLIT[1] * len(rows))
    parts = np.split(order, [n_train, n_train + n_valid])
    return {split: rows[index] for split, index in zip(SPLITS, parts, strict=True)}


def _listing(*parts: tuple[str, list[str]]) -> str:
    """'; '-joined ``template.format(names)`` of each part with names (repr'd, comma-joined)."""
    return "; ".join(
        template.format(", ".join(map(repr, names))) for template, names in parts if names
    )
