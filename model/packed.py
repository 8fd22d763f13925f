"""The packed-bits format of binary rows (``made-data pack``, source ``packed``): one
``SPLIT.bits`` file per split, each row D entries packed 1 bit each (``np.packbits`` along the
row), and ``packed.json`` naming D and each split's row count. 784 binary pixels take 98 bytes,
against 784 as uint8 and 3,136 as float32; the trainer unpacks a minibatch at a time."""

import json
from pathlib import Path

import numpy as np

from model.rows import PackedRows, Rows, packed_width

FORMAT = "made-packed-bits"
VERSION = 1
SIDECAR = "packed.json"
SPLITS = ("train", "valid", "test")
PACK_ROWS = 8192  # rows read, packed and written at a time: 25 MB as float32 at D = 784


class PackedError(ValueError):
    """A packed folder that cannot be read; the message names the file and the problem."""


def split_file(folder: Path, split: str) -> Path:
    return folder / f"{split}.bits"


def write_packed(
    splits: dict[str, Rows],
    out: Path,
    binarization: str,
    image_shape: tuple[int, int] | None,
    packed_from: dict[str, str | None],
) -> dict[str, object]:
    """Pack the 0/1 ``splits`` into ``out`` a chunk of rows at a time; return the sidecar.
    The sidecar is written last: a folder whose packing was interrupted has none, so no loader
    takes its partial files for data."""
    out.mkdir(parents=True, exist_ok=True)
    dims = {rows.shape[1] for rows in splits.values()}
    if len(dims) != 1:
        raise PackedError(f"splits differ in dimension: {dims}")
    for split, rows in splits.items():
        with split_file(out, split).open("wb") as handle:
            for start in range(0, len(rows), PACK_ROWS):
                chunk = np.asarray(rows[start : start + PACK_ROWS], dtype=np.uint8)
                np.packbits(chunk, axis=1).tofile(handle)
    sidecar = {
        "format": FORMAT,
        "version": VERSION,
        "dim": dims.pop(),
        "bit_order": "big",
        "rows": {split: len(rows) for split, rows in splits.items()},
        "binarization": binarization,
        "image_shape": list(image_shape) if image_shape else None,
        "packed_from": packed_from,
    }
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def read_sidecar(folder: Path) -> dict:
    """``folder``'s packed.json, checked against the format and against its files' sizes."""
    path = folder / SIDECAR
    if not path.is_file():
        raise PackedError(f"{folder} has no {SIDECAR}; write one with made-data pack")
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PackedError(f"{path} is not readable JSON: {exc}") from exc
    if (sidecar.get("format"), sidecar.get("version")) != (FORMAT, VERSION):
        raise PackedError(f"{path}: not a {FORMAT} version {VERSION} sidecar")
    dim, rows = sidecar.get("dim"), sidecar.get("rows")
    if not isinstance(dim, int) or dim < 1:
        raise PackedError(f"{path}: dim must be a positive integer, got {dim!r}")
    if not isinstance(rows, dict) or sorted(rows) != sorted(SPLITS):
        raise PackedError(f"{path}: rows must give the row count of {', '.join(SPLITS)}")
    for split in SPLITS:
        count, data = rows[split], split_file(folder, split)
        if not isinstance(count, int) or count < 1:
            raise PackedError(f"{path}: split {split!r} has {count!r} rows; it needs at least 1")
        if not data.is_file():
            raise PackedError(f"{data} does not exist ({path} lists it)")
        expected = count * packed_width(dim)
        if data.stat().st_size != expected:
            raise PackedError(
                f"{data} holds {data.stat().st_size:,} bytes, but {path} promises {count:,} rows "
                f"of D={dim} ({packed_width(dim)} bytes each) = {expected:,} bytes"
            )
    return sidecar


def open_packed(folder: Path) -> tuple[dict, dict[str, PackedRows]]:
    """The sidecar and each split's rows, memory-mapped."""
    sidecar = read_sidecar(folder)
    splits = {
        split: PackedRows(split_file(folder, split), sidecar["rows"][split], sidecar["dim"])
        for split in SPLITS
    }
    return sidecar, splits
