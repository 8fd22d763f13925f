"""Named data sources, each giving train/valid/test splits with one interface.

Binary sources (0/1 rows, ``Dataset.schema`` None): ``digits`` (scikit-learn's bundled 8x8
digits, the embedded default), ``fashion-mnist`` and ``mnist`` (standard IDX files), ``npz`` (the
MADE release format), users' own ``.npy`` or ``.csv`` files of 0/1 rows, and ``packed`` (a folder
written by ``made-data pack``).

Sources of levels (rows hold each dimension's level index 0..L-1 as float32, and
``Dataset.schema`` says each dimension's family, ``service.contract.schema``): ``digits-levels``
(the digits at their 17 grey levels, ordinal; ``digits-levels-categorical`` takes them as 17
unordered classes), ``fashion-mnist-8bit``, ``mnist-8bit`` and ``idx-8bit`` (IDX pixels 0..255,
ordinal), and ``files`` with a schema file (``schema.json`` in a folder, ``<stem>.schema.json``
next to a single file) or whose values are not all 0/1, for which a schema is inferred.

Tables with a header (``model.tables``): ``table`` (a .csv/.parquet file or a folder of them) and
the built-in ``randhie``, ``fair``, ``wine`` and ``breast-cancer``, their columns of any family
(real-valued ones included), read with pandas.

``.npy`` files and packed folders stay on disk, memory-mapped (``model.rows``): they may be larger
than memory, and are checked a chunk at a time. The other sources are read into memory.
"""

import csv
import gzip
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydantic

from model.packed import PackedError, open_packed
from model.rows import MappedRows, Rows, drop_pages, subset
from model.table_sources import TABLE_SOURCES
from service.contract.schema import (
    DEFAULT_COMPONENTS,
    Bernoulli,
    Categorical,
    Dimension,
    Ordinal,
    Schema,
)

DIGITS_THRESHOLD = 8  # digits pixels are 0..16; a pixel is on when >= 8
IDX_THRESHOLD = 127  # IDX pixels are 0..255; a pixel is on when > 127
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_TRAIN_SIZE = 50_000  # first 50,000 official training images train, the last 10,000 validate
OWN_DATA_SPLIT = (0.8, 0.1)  # a single file of rows is split 80/10/10 with a fixed permutation
SPLITS = ("train", "valid", "test")
CALIBRATION_SEED = 0
MAX_CALIBRATION_ROWS = 10_000  # p-values then resolve 1e-4; the manifest stores every score
CHECK_BYTES = 1 << 26  # bytes of a file's rows checked at a time
DIGITS_LEVELS = 17  # digits pixels are 0..16
IDX_LEVELS = 256  # IDX pixels are 0..255
ORDINAL_COMPONENTS = DEFAULT_COMPONENTS  # M of the built-in sources' and inferred ordinals
MAX_INFERRED_LEVELS = 1 << 16  # without a schema file, a column's values must be below this
SCHEMA_FILE = "schema.json"  # in a folder of train/valid/test files
SCHEMA_SUFFIX = ".schema.json"  # next to a single file: rows.csv -> rows.schema.json
BUILT_IN = "built in"  # Dataset.schema_origin of the sources whose schema is fixed
_DIMENSIONS = pydantic.TypeAdapter(list[Dimension])


class DataError(ValueError):
    """Data that cannot be used as rows of its schema (binary or levels); the message names the
    file and the problem."""


@dataclass(frozen=True)
class Dataset:
    """Splits, each [N, D]: float32 arrays in memory, or row stores on disk whose reads give
    float32 rows (``model.rows``). With ``schema`` None every dimension is Bernoulli and the rows
    are 0/1; otherwise they hold each dimension's level index (0..L-1) as a float."""

    name: str
    train: Rows
    valid: Rows
    test: Rows
    binarization: str
    image_shape: tuple[int, int] | None = None
    location: str | None = None
    # Rows held out of the validation split for conformal p-values (see hold_out_calibration),
    # and their indices in the source's validation split.
    calibration: np.ndarray | None = None
    calibration_rows: np.ndarray | None = None
    # Each dimension's family; None when all are Bernoulli (the binary sources). schema_origin
    # says where it came from, for the trainer's log: "built in" (the source fixes it),
    # "inferred" (from the values of a files source) or the path of the schema file.
    schema: Schema | None = None
    schema_origin: str | None = None

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def split_sizes(self) -> dict[str, int]:
        sizes = {split: len(self.split(split)) for split in SPLITS}
        if self.calibration is not None:
            sizes["calibration"] = len(self.calibration)
        return sizes

    def split(self, name: str) -> Rows:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def load_dataset(source: str, path: Path | None = None, missing: str = "refuse") -> Dataset:
    """Load a named source; ``path`` is the folder or file for sources that need one.
    ``missing`` ("refuse" or "drop"): what a table's rows with a missing cell get; the other
    sources have no missing cells to drop."""
    if source == "table" or source in TABLE_SOURCES:
        from model.tables import load_builtin_table, load_table  # pandas, only for tables

        if source in TABLE_SOURCES:
            return load_builtin_table(source, missing)
        if path is None:
            raise DataError("source 'table' needs --data-dir, a .csv/.parquet file or a folder")
        return load_table(Path(path), missing)
    if missing != "refuse":
        raise DataError(f"missing={missing!r} applies to tables only, not to source {source!r}")
    if source == "digits":
        return _digits()
    if source in ("digits-levels", "digits-levels-categorical"):
        return _digits_levels(categorical=source.endswith("-categorical"))
    if source in ("fashion-mnist", "mnist", "idx", "fashion-mnist-8bit", "mnist-8bit", "idx-8bit"):
        folder = path or (FASHION_MNIST_DIR if source.startswith("fashion-mnist") else None)
        if folder is None:
            raise DataError(f"source {source!r} needs --data-dir, a folder of IDX files")
        if source.endswith("-8bit"):
            return _idx_8bit(source, Path(folder))
        return _idx_folder(source, Path(folder))
    if source == "npz":
        if path is None:
            raise DataError("source 'npz' needs --data-dir, the path of a .npz file")
        return _made_npz(Path(path))
    if source == "files":
        if path is None:
            raise DataError("source 'files' needs --data-dir, a .npy/.csv file or a folder")
        return _own_files(Path(path))
    if source == "packed":
        if path is None:
            raise DataError("source 'packed' needs --data-dir, a folder written by made-data pack")
        return _packed_folder(Path(path))
    raise DataError(
        f"unknown data source {source!r}; "
        "choose digits, digits-levels, digits-levels-categorical, fashion-mnist, mnist, idx, "
        "fashion-mnist-8bit, mnist-8bit, idx-8bit, npz, files, packed, table, "
        f"{', '.join(TABLE_SOURCES)}"
    )


def hold_out_calibration(data: Dataset, fraction: float, seed: int = CALIBRATION_SEED) -> Dataset:
    """``data`` with ``fraction`` of its validation rows (at most MAX_CALIBRATION_ROWS, chosen by a
    seeded shuffle) moved to a calibration split that nothing fits on: the conformal p-values'
    guarantee needs rows exchangeable with new ones and unseen by the model. The calibration rows
    are read into memory; the validation rows left stay on disk if they were."""
    if fraction == 0:
        return data
    count = min(MAX_CALIBRATION_ROWS, int(fraction * len(data.valid)))
    if count < 1 or count >= len(data.valid):
        raise DataError(
            f"a calibration fraction of {fraction} leaves {count} of the {len(data.valid)} "
            "validation rows for calibration and the rest for validation: both need rows"
        )
    chosen = np.sort(np.random.default_rng(seed).permutation(len(data.valid))[:count])
    kept = np.setdiff1d(np.arange(len(data.valid)), chosen)
    return replace(
        data,
        valid=subset(data.valid, kept),
        calibration=data.valid[chosen],
        calibration_rows=chosen,
    )


def _digits_images() -> np.ndarray:
    """scikit-learn's 1,797 digits, [N, 64] pixels 0..16 (float64)."""
    from sklearn.datasets import load_digits

    return load_digits().data


def _digits_split(name: str, rows: np.ndarray, binarization: str, **fields) -> Dataset:
    """The digits' fixed split: a seeded permutation, 300 test rows, 300 validation, the rest
    train (the same rows for every digits source)."""
    order = np.random.default_rng(0).permutation(len(rows))
    test, valid, train = order[:300], order[300:600], order[600:]
    return Dataset(
        name=name,
        train=rows[train],
        valid=rows[valid],
        test=rows[test],
        binarization=binarization,
        image_shape=(8, 8),
        location="sklearn.datasets.load_digits",
        **fields,
    )


def _digits() -> Dataset:
    rows = (_digits_images() >= DIGITS_THRESHOLD).astype(np.float32)
    return _digits_split("digits", rows, f"pixel >= {DIGITS_THRESHOLD} of 16")


def _digits_levels(categorical: bool = False) -> Dataset:
    """The digits at their 17 grey levels: ordinal, or 17 unordered classes."""
    images = _digits_images()
    if categorical:
        dimension: Dimension = Categorical(classes=DIGITS_LEVELS)
    else:
        dimension = Ordinal(levels=DIGITS_LEVELS, components=ORDINAL_COMPONENTS)
    return _digits_split(
        "digits-levels-categorical" if categorical else "digits-levels",
        images.astype(np.float32),
        f"none: {DIGITS_LEVELS} grey levels (0..{DIGITS_LEVELS - 1})",
        schema=Schema([dimension] * images.shape[1]),
        schema_origin=BUILT_IN,
    )


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) of unsigned bytes into an array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08":
                raise DataError(f"{path} is not an IDX file of unsigned bytes")
            shape = struct.unpack(f">{magic[3]}I", handle.read(4 * magic[3]))
            data = np.frombuffer(handle.read(), dtype=np.uint8)
    except (OSError, EOFError, struct.error) as exc:
        raise DataError(f"{path} could not be read: {exc}") from exc
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {data.size} bytes, its header promises shape {shape}")
    return data.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder} has no {stem}(.gz); expected standard MNIST-format IDX files")


def _binarize_idx(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1) > IDX_THRESHOLD).astype(np.float32)


def _idx_levels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32)


def _idx_folder(
    name: str,
    folder: Path,
    transform: Callable[[np.ndarray], np.ndarray] = _binarize_idx,
    binarization: str = f"pixel > {IDX_THRESHOLD} of 255",
) -> Dataset:
    """A folder of MNIST-format IDX files: the first IDX_TRAIN_SIZE official training images
    train, the rest validate, t10k tests; ``transform`` turns [N, H, W] bytes into [N, H * W]
    float32 rows."""
    if not folder.is_dir():
        hint = " (apt-get install dataset-fashion-mnist)" if folder == FASHION_MNIST_DIR else ""
        raise DataError(f"IDX folder {folder} does not exist{hint}")
    train_images = read_idx(_find_idx(folder, "train-images-idx3-ubyte"))
    test_images = read_idx(_find_idx(folder, "t10k-images-idx3-ubyte"))
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"{folder}: train and test images differ in shape")
    if len(train_images) <= IDX_TRAIN_SIZE:
        raise DataError(f"{folder}: need more than {IDX_TRAIN_SIZE} training images")
    height, width = train_images.shape[1:]
    return Dataset(
        name=name,
        train=transform(train_images[:IDX_TRAIN_SIZE]),
        valid=transform(train_images[IDX_TRAIN_SIZE:]),
        test=transform(test_images),
        binarization=binarization,
        image_shape=(int(height), int(width)),
        location=str(folder),
    )


def _idx_8bit(name: str, folder: Path) -> Dataset:
    """An IDX folder at its 256 grey levels, each pixel an ordinal dimension."""
    data = _idx_folder(name, folder, _idx_levels, f"none: 8-bit (0..{IDX_LEVELS - 1})")
    dimension = Ordinal(levels=IDX_LEVELS, components=ORDINAL_COMPONENTS)
    return replace(data, schema=Schema([dimension] * data.dim), schema_origin=BUILT_IN)


def _made_npz(path: Path) -> Dataset:
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz file: {exc}") from exc
    with archive:
        missing = [f"{s}_data" for s in SPLITS if f"{s}_data" not in archive.files]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)} (MADE format)")
        splits = {s: _binary_rows(archive[f"{s}_data"], f"{path}:{s}_data") for s in SPLITS}
    return _from_splits("npz", splits, str(path))


def _own_files(path: Path) -> Dataset:
    """Users' rows: a folder of train/valid/test .npy/.csv files, or one file split 80/10/10 by a
    fixed permutation. With a schema file (SCHEMA_FILE in the folder, ``<stem>.schema.json`` next
    to the file) the rows are levels of its columns. Without one they are 0/1, binary as they
    always were, unless some value is not 0 or 1: then the schema is inferred from the values."""
    if path.is_dir():
        files = {split: _split_file(path, split) for split in SPLITS}
        schema_file = path / SCHEMA_FILE
    else:
        if not path.is_file():
            raise DataError(f"{path} does not exist")
        files = {"rows": path}
        schema_file = path.with_suffix(SCHEMA_SUFFIX)
    declared = _read_schema_file(schema_file) if schema_file.is_file() else None
    labelled = _labelled_columns(declared) if declared is not None else _string_columns(files)
    values = {
        key: _read_values(file, labelled, declared, schema_file) for key, file in files.items()
    }
    for key, array in values.items():
        _check_rows_shape(array, str(files[key]))
    dims = {key: int(array.shape[1]) for key, array in values.items()}
    if len(set(dims.values())) != 1:
        raise DataError(f"{path}: splits differ in dimension {dims}")
    if declared is not None:
        for key, array in values.items():
            _check_levels(array, declared, str(files[key]), schema_file)
        schema, origin = declared, str(schema_file)
    else:
        schema = _infer_schema({str(files[key]): array for key, array in values.items()}, labelled)
        origin = None if schema is None else "inferred"
    rows = {
        key: MappedRows(array) if files[key].suffix == ".npy" else array.astype(np.float32)
        for key, array in values.items()
    }
    if "rows" in rows:
        order = np.random.default_rng(0).permutation(len(rows["rows"]))
        n_train = int(OWN_DATA_SPLIT[0] * len(order))
        n_valid = int(OWN_DATA_SPLIT[1] * len(order))
        parts = np.split(order, [n_train, n_train + n_valid])
        rows = {s: subset(rows["rows"], idx) for s, idx in zip(SPLITS, parts, strict=True)}
    return _from_splits("files", rows, str(path), schema, origin)


def _read_schema_file(path: Path) -> Schema:
    """A schema file: ``{"columns": [...]}``, one object per column, each a dimension of
    ``service.contract.schema`` (``{"family": "bernoulli"}``, ``{"family": "categorical",
    "classes": C, "labels": [...]}``, ``{"family": "ordinal", "levels": L, "components": M}``,
    each with an optional ``"name"``)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"schema file {path} is not readable JSON: {exc}") from exc
    if (
        not isinstance(document, dict)
        or set(document) != {"columns"}
        or not isinstance(document["columns"], list)
    ):
        raise DataError(
            f'schema file {path}: expected {{"columns": [...]}}, a list of one object per column '
            '(e.g. {"name": "age", "family": "ordinal", "levels": 5})'
        )
    columns = document["columns"]
    try:
        dimensions = _DIMENSIONS.validate_python(columns)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        index = error["loc"][0]
        name = columns[index].get("name") if isinstance(columns[index], dict) else None
        column = f"{index} ({name!r})" if isinstance(name, str) and name else str(index)
        field = ".".join(str(part) for part in error["loc"][2:])  # loc[1] is the family
        more = exc.error_count() - 1
        raise DataError(
            f"schema file {path}: column {column}: {field + ': ' if field else ''}{error['msg']}"
            + (f" (and {more} more errors)" if more else "")
        ) from None
    try:
        return Schema(dimensions)
    except ValueError as exc:
        raise DataError(f"schema file {path}: {exc}") from exc


def _infer_schema(values: dict[str, np.ndarray], labelled: dict[int, list[str]]) -> Schema | None:
    """The schema of rows given without a schema file: None (binary, as always) when every value
    is 0 or 1; else a column of strings (``labelled``, read as label indices) is categorical with
    those labels, a column whose values are all 0/1 is Bernoulli and one whose largest value is
    m > 1 is ordinal with m + 1 levels. Every split's values count, not only train's: a test value
    above train's largest would otherwise be refused after the schema was fixed."""
    maxima = np.max([_column_maxima(array, where) for where, array in values.items()], axis=0)
    if (maxima <= 1).all() and not labelled:
        return None
    dimensions = [
        Categorical(classes=len(labelled[col]), labels=labelled[col])
        if col in labelled
        else Bernoulli()
        if m <= 1
        else Ordinal(levels=int(m) + 1, components=ORDINAL_COMPONENTS)
        for col, m in enumerate(maxima)
    ]
    try:
        return Schema(dimensions)
    except ValueError as exc:
        raise DataError(f"{next(iter(values))}: {exc}") from exc


def _column_maxima(values: np.ndarray, where: str) -> np.ndarray:
    """[D] each column's largest value, refusing (naming ``where``, the row and the column) any
    value that is not an integer level 0..MAX_INFERRED_LEVELS-1; read a chunk at a time."""
    if values.dtype == np.bool_:
        return np.ones(values.shape[1])
    maxima = np.zeros(values.shape[1])
    for start, chunk in _chunks(values, 8):
        x = chunk.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            good = (x == np.round(x)) & (x >= 0) & (x < MAX_INFERRED_LEVELS)
        if not good.all():
            row, col = np.argwhere(~good)[0]
            value = _value_text(x[row, col])
            raise DataError(
                f"{where}: row {start + row}, column {col}: found {value}; without a schema file, "
                f"values must be 0 or 1, or integer levels 0..{MAX_INFERRED_LEVELS - 1} "
                "(an ordinal column)"
                + ("; a discrete column has no missing values" if np.isnan(x[row, col]) else "")
            )
        maxima = np.maximum(maxima, x.max(axis=0))
    return maxima


def _check_levels(values: np.ndarray, schema: Schema, where: str, schema_file: Path) -> None:
    """Refuse any entry of ``values`` that is not a level of its column in ``schema``, naming
    ``where``, the row and the column; read a chunk at a time."""
    _check_width(values.shape[1], schema, where, schema_file)
    if values.dtype == np.bool_:
        return  # 0 and 1 are levels of every dimension
    for start, chunk in _chunks(values, 8):
        found = schema.first_invalid(chunk)
        if found is not None:
            row, col = found
            dimension = schema.dimensions[col]
            value = float(chunk[row, col])
            expected = {
                "bernoulli": "0 or 1",
                "categorical": f"a class 0..{dimension.levels - 1}",
                "ordinal": f"a level 0..{dimension.levels - 1}",
                "gaussian_mixture": "a finite number",
            }[dimension.family]
            raise DataError(
                f"{where}: row {start + row}, column {schema.column(col)}: found "
                f"{_value_text(value)}, expected {expected} ({dimension.family}, {schema_file})"
                + ("; a discrete column has no missing values" if np.isnan(value) else "")
            )


def _check_width(width: int, schema: Schema, where: str, schema_file: Path) -> None:
    if width != schema.dim:
        raise DataError(
            f"{where}: rows of {width} columns, but schema file {schema_file} describes "
            f"{schema.dim}"
        )


def _value_text(value: float) -> str:
    return "NaN" if np.isnan(value) else str(float(value))


def _chunks(values: np.ndarray, item_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, a copy of the rows) of ``values`` (maybe a memory-mapped file larger than
    memory) about CHECK_BYTES at a time (counting ``item_bytes`` per entry, for checks that
    widen the values), the mapping's pages dropped after each copy."""
    width = max(1, values.shape[1] * (item_bytes or values.itemsize))
    step = max(1, CHECK_BYTES // width)
    for start in range(0, len(values), step):
        chunk = np.array(values[start : start + step])
        drop_pages(values)
        yield start, chunk


def _packed_folder(folder: Path) -> Dataset:
    if not folder.is_dir():
        raise DataError(f"packed folder {folder} does not exist")
    try:
        sidecar, splits = open_packed(folder)
    except PackedError as exc:
        raise DataError(str(exc)) from exc
    shape = sidecar.get("image_shape")
    return Dataset(
        name="packed",
        binarization=sidecar.get("binarization") or "given as 0/1",
        image_shape=tuple(shape) if shape else None,
        location=str(folder),
        **splits,
    )


def _split_file(folder: Path, split: str) -> Path:
    for suffix in (".npy", ".csv"):
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise DataError(f"{folder} has no {split}.npy or {split}.csv")


def _read_values(
    path: Path, labelled: dict[int, list[str]], schema: Schema | None, schema_file: Path
) -> np.ndarray:
    """A file's raw values: a .npy memory-mapped, a .csv read as float64 (its cells numbers, or a
    label of a ``labelled`` column, read as its index)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable .npy array of numbers: {exc}") from exc
    if path.suffix == ".csv":
        return _read_csv(path, labelled, schema, schema_file)
    raise DataError(f"{path}: expected a .npy or .csv file")


def _labelled_columns(schema: Schema) -> dict[int, list[str]]:
    """The labels of each labelled categorical column of a declared schema."""
    return {
        col: dimension.labels
        for col, dimension in enumerate(schema.dimensions)
        if isinstance(dimension, Categorical) and dimension.labels is not None
    }


def _string_columns(files: dict[str, Path]) -> dict[int, list[str]]:
    """Without a schema file: the CSV columns holding a cell that is not a number, each with its
    labels, every split's distinct cells sorted (so a test label is known). A column whose only
    such cell is on the first line is refused as a header: these CSV files have none."""
    cells = {path: _csv_cells(path) for path in files.values() if path.suffix == ".csv"}
    labels: dict[int, set[str]] = {}
    for path, rows in cells.items():
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                if c not in labels and not _is_number(cell):
                    if r == 0 and all(_is_number(other[c]) for other in rows[1:]):
                        raise DataError(
                            f"{path}: row 0, column {c}: {cell!r} is not a number, and the "
                            "column's other cells are: these CSV files have no header line "
                            "(drop it, or name the columns in a schema file)"
                        )
                    labels[c] = set()
    for rows in cells.values():
        for row in rows:
            for c, found in labels.items():
                if c < len(row):  # (splits of other widths are refused after reading)
                    found.add(row[c].strip())
    return {c: sorted(found) for c, found in sorted(labels.items())}


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _csv_cells(path: Path) -> list[list[str]]:
    """A headerless CSV's cells, refusing ragged rows."""
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        first = next(i for i, row in enumerate(rows) if len(row) != len(rows[0]))
        raise DataError(
            f"{path}: ragged rows, line {first + 1} has {len(rows[first])} values, "
            f"line 1 has {len(rows[0])}"
        )
    return rows


def _read_csv(
    path: Path,
    labelled: dict[int, list[str]],
    schema: Schema | None = None,
    schema_file: Path | None = None,
) -> np.ndarray:
    """A headerless CSV of numbers; a ``labelled`` column's cells may also be its labels, read
    as their class indices."""
    rows = _csv_cells(path)
    if schema is not None and rows:
        _check_width(len(rows[0]), schema, str(path), schema_file or path)
    labels = {col: {label: i for i, label in enumerate(names)} for col, names in labelled.items()}

    def cell_value(col: int, cell: str) -> float:
        if col in labels and cell.strip() in labels[col]:
            return float(labels[col][cell.strip()])
        return float(cell)

    try:
        if labels:
            values = [[cell_value(c, cell) for c, cell in enumerate(row)] for row in rows]
        else:
            values = [[float(cell) for cell in row] for row in rows]
    except ValueError:
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                try:
                    cell_value(c, cell)
                except ValueError:
                    column = schema.column(c) if schema is not None else str(c)
                    if c in labels:
                        known = ", ".join(repr(label) for label in labels[c])
                        problem = f"unknown label {cell!r} (its labels: {known})"
                    else:
                        problem = f"{cell!r} is not a number"
                    raise DataError(f"{path}: row {r}, column {column}: {problem}") from None
        raise
    return np.array(values, dtype=np.float64)


def _binary_rows(values: np.ndarray, where: str) -> np.ndarray:
    """Check that ``values`` are [N, D] rows of exactly 0 or 1 and return them as float32."""
    _check_binary(values, where)
    return values.astype(np.float32)


def _check_binary(values: np.ndarray, where: str) -> None:
    """Refuse anything but [N, D] rows of exactly 0 or 1, naming ``where`` and the first bad
    entry; ``values`` (a memory-mapped file, possibly larger than memory) is read in chunks of
    CHECK_BYTES, its pages dropped after each."""
    _check_rows_shape(values, where)
    if values.dtype == np.bool_:
        return
    step = max(1, CHECK_BYTES // max(1, values.shape[1] * values.itemsize))
    for start in range(0, len(values), step):
        chunk = np.asarray(values[start : start + step])
        if np.issubdtype(chunk.dtype, np.inexact) and np.isnan(chunk).any():
            raise DataError(f"{where}: contains NaN")
        bad = (chunk != 0) & (chunk != 1)
        drop_pages(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(
                f"{where}: values must be 0 or 1, found {float(chunk[row, col])} "
                f"at [{start + row}, {col}]"
            )


def _check_rows_shape(values: np.ndarray, where: str) -> None:
    """Refuse anything but a non-empty [N, D] array of numbers (or booleans)."""
    if values.dtype == object:
        raise DataError(f"{where}: ragged or non-numeric rows")
    if values.ndim != 2:
        raise DataError(f"{where}: expected 2-D rows [N, D], got shape {values.shape}")
    if values.shape[0] == 0:
        raise DataError(f"{where}: empty split")
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise DataError(f"{where}: values must be numbers, got dtype {values.dtype}")


def _from_splits(
    name: str,
    splits: dict[str, Rows],
    location: str,
    schema: Schema | None = None,
    schema_origin: str | None = None,
) -> Dataset:
    for split, rows in splits.items():
        if len(rows) == 0:
            raise DataError(f"{location}: split {split!r} is empty")
    dims = {split: rows.shape[1] for split, rows in splits.items()}
    if len(set(dims.values())) != 1:
        raise DataError(f"{location}: splits differ in dimension {dims}")
    return Dataset(
        name=name,
        binarization="given as 0/1" if schema is None else "none: levels as given",
        location=location,
        schema=schema,
        schema_origin=schema_origin,
        **splits,
    )
