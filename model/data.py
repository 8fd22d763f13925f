"""Named data sources, each giving binary train/valid/test splits with one interface.

Sources: ``digits`` (scikit-learn's bundled 8x8 digits, the embedded default), ``fashion-mnist``
and ``mnist`` (standard IDX files), ``npz`` (the MADE release format), users' own ``.npy``
or ``.csv`` files of 0/1 rows, and ``packed`` (a folder written by ``made-data pack``).

``.npy`` files and packed folders stay on disk, memory-mapped (``model.rows``): they may be larger
than memory, and are checked a chunk at a time. The other sources are read into memory.
"""

import csv
import gzip
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model.packed import PackedError, open_packed
from model.rows import MappedRows, Rows, drop_pages, subset

DIGITS_THRESHOLD = 8  # digits pixels are 0..16; a pixel is on when >= 8
IDX_THRESHOLD = 127  # IDX pixels are 0..255; a pixel is on when > 127
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_TRAIN_SIZE = 50_000  # first 50,000 official training images train, the last 10,000 validate
OWN_DATA_SPLIT = (0.8, 0.1)  # a single file of rows is split 80/10/10 with a fixed permutation
SPLITS = ("train", "valid", "test")
CALIBRATION_SEED = 0
MAX_CALIBRATION_ROWS = 10_000  # p-values then resolve 1e-4; the manifest stores every score
CHECK_BYTES = 1 << 26  # bytes of a file's rows checked at a time


class DataError(ValueError):
    """Data that cannot be used as binary rows; the message names the file and the problem."""


@dataclass(frozen=True)
class Dataset:
    """Binary splits, each [N, D] in {0, 1}: float32 arrays in memory, or row stores on disk whose
    reads give float32 rows (``model.rows``)."""

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


def load_dataset(source: str, path: Path | None = None) -> Dataset:
    """Load a named source; ``path`` is the folder or file for sources that need one."""
    if source == "digits":
        return _digits()
    if source in ("fashion-mnist", "mnist", "idx"):
        folder = path or (FASHION_MNIST_DIR if source == "fashion-mnist" else None)
        if folder is None:
            raise DataError(f"source {source!r} needs --data-dir, a folder of IDX files")
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
        "choose digits, fashion-mnist, mnist, idx, npz, files or packed"
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


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    images = load_digits().data
    rows = (images >= DIGITS_THRESHOLD).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(rows))
    test, valid, train = order[:300], order[300:600], order[600:]
    return Dataset(
        name="digits",
        train=rows[train],
        valid=rows[valid],
        test=rows[test],
        binarization=f"pixel >= {DIGITS_THRESHOLD} of 16",
        image_shape=(8, 8),
        location="sklearn.datasets.load_digits",
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


def _idx_folder(name: str, folder: Path) -> Dataset:
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

    def binarize(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1) > IDX_THRESHOLD).astype(np.float32)

    return Dataset(
        name=name,
        train=binarize(train_images[:IDX_TRAIN_SIZE]),
        valid=binarize(train_images[IDX_TRAIN_SIZE:]),
        test=binarize(test_images),
        binarization=f"pixel > {IDX_THRESHOLD} of 255",
        image_shape=(int(height), int(width)),
        location=str(folder),
    )


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
    if path.is_dir():
        splits = {s: _read_rows(_split_file(path, s)) for s in SPLITS}
        return _from_splits("files", splits, str(path))
    rows = _read_rows(path)
    order = np.random.default_rng(0).permutation(len(rows))
    n_train = int(OWN_DATA_SPLIT[0] * len(rows))
    n_valid = int(OWN_DATA_SPLIT[1] * len(rows))
    parts = np.split(order, [n_train, n_train + n_valid])
    splits = {s: subset(rows, idx) for s, idx in zip(SPLITS, parts, strict=True)}
    return _from_splits("files", splits, str(path))


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


def _read_rows(path: Path) -> Rows:
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if path.suffix == ".npy":
        try:
            values = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable .npy array of numbers: {exc}") from exc
        _check_binary(values, str(path))
        return MappedRows(values)
    if path.suffix == ".csv":
        return _binary_rows(_read_csv(path), str(path))
    raise DataError(f"{path}: expected a .npy or .csv file")


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        first = next(i for i, row in enumerate(rows) if len(row) != len(rows[0]))
        raise DataError(
            f"{path}: ragged rows, line {first + 1} has {len(rows[first])} values, "
            f"line 1 has {len(rows[0])}"
        )
    try:
        return np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc


def _binary_rows(values: np.ndarray, where: str) -> np.ndarray:
    """Check that ``values`` are [N, D] rows of exactly 0 or 1 and return them as float32."""
    _check_binary(values, where)
    return values.astype(np.float32)


def _check_binary(values: np.ndarray, where: str) -> None:
    """Refuse anything but [N, D] rows of exactly 0 or 1, naming ``where`` and the first bad
    entry; ``values`` (a memory-mapped file, possibly larger than memory) is read in chunks of
    CHECK_BYTES, its pages dropped after each."""
    if values.dtype == object:
        raise DataError(f"{where}: ragged or non-numeric rows")
    if values.ndim != 2:
        raise DataError(f"{where}: expected 2-D rows [N, D], got shape {values.shape}")
    if values.shape[0] == 0:
        raise DataError(f"{where}: empty split")
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise DataError(f"{where}: values must be numbers, got dtype {values.dtype}")
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


def _from_splits(name: str, splits: dict[str, np.ndarray], location: str) -> Dataset:
    for split, rows in splits.items():
        if len(rows) == 0:
            raise DataError(f"{location}: split {split!r} is empty")
    dims = {split: rows.shape[1] for split, rows in splits.items()}
    if len(set(dims.values())) != 1:
        raise DataError(f"{location}: splits differ in dimension {dims}")
    return Dataset(
        name=name,
        binarization="given as 0/1",
        location=location,
        **splits,
    )
