"""Data larger than memory: .npy files memory-mapped and packed-bit folders (made-data pack) are
read a batch or a chunk at a time, checked in chunks, and train exactly as rows in memory do."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import data as data_module
from model.cli import data_main, train_main
from model.data import DataError, load_dataset
from model.packed import SIDECAR
from model.rows import MappedRows, RowStore, drop_pages
from tests.conftest import correlated_rows, train_tiny, write_splits

SPLITS = ("train", "valid", "test")


def splits_of(source: str, path: Path | None = None) -> dict[str, np.ndarray]:
    data = load_dataset(source, path)
    return {split: np.asarray(data.split(split)) for split in SPLITS}


def test_packed_rows_round_trip_and_train_exactly_as_the_files(tmp_path: Path) -> None:
    files = write_splits(tmp_path / "files", dim=13)  # 13: the last byte of a row is padded
    assert data_main(["pack", str(files), "--out", str(tmp_path / "packed")]) == 0
    assert (tmp_path / "packed" / "train.bits").stat().st_size == 600 * 2
    packed = load_dataset("packed", tmp_path / "packed")
    assert packed.dim == 13 and packed.name == "packed"
    for split, rows in splits_of("files", files).items():
        np.testing.assert_array_equal(np.asarray(packed.split(split)), rows)
        assert packed.split(split)[[5, 2]].dtype == np.float32

    a = train_tiny(tmp_path / "a", files, epochs=2).model.state_dict()
    b = train_tiny(tmp_path / "b", tmp_path / "packed", source="packed", epochs=2)
    for name, weights in b.model.state_dict().items():
        assert torch.equal(weights, a[name]), name


def test_pack_keeps_a_named_sources_image_shape_and_a_files_split(tmp_path: Path) -> None:
    assert data_main(["pack", "--source", "digits", "--out", str(tmp_path / "digits")]) == 0
    digits = load_dataset("packed", tmp_path / "digits")
    assert digits.image_shape == (8, 8)
    assert digits.binarization == load_dataset("digits").binarization
    np.testing.assert_array_equal(np.asarray(digits.test), load_dataset("digits").test)

    rows = correlated_rows(50, 5, seed=3).astype(int)
    np.savetxt(tmp_path / "rows.csv", rows, fmt="%d", delimiter=",")
    assert data_main(["pack", str(tmp_path / "rows.csv"), "--out", str(tmp_path / "csv")]) == 0
    expected = splits_of("files", tmp_path / "rows.csv")
    for split, values in splits_of("packed", tmp_path / "csv").items():
        np.testing.assert_array_equal(values, expected[split])


def test_a_packed_folder_that_does_not_match_its_sidecar_is_refused(tmp_path, capsys) -> None:
    folder = tmp_path / "packed"
    assert data_main(["pack", str(write_splits(tmp_path / "files", 8)), "--out", str(folder)]) == 0
    with (folder / "valid.bits").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataError, match=r"valid.bits holds 201 bytes, but .* promises 200 rows"):
        load_dataset("packed", folder)
    args = ["--source", "packed", "--data-dir", str(folder), "--out", str(tmp_path / "run")]
    assert train_main([*args, "--quiet"]) == 2
    assert "valid.bits holds 201 bytes" in capsys.readouterr().err

    sidecar = json.loads((folder / SIDECAR).read_text())
    (folder / SIDECAR).write_text(json.dumps({**sidecar, "version": 99}))
    with pytest.raises(DataError, match="not a made-packed-bits version 1 sidecar"):
        load_dataset("packed", folder)
    (folder / SIDECAR).unlink()
    with pytest.raises(DataError, match=r"has no packed\.json; write one with made-data pack"):
        load_dataset("packed", folder)


def test_npy_splits_are_memory_mapped_and_only_ever_read_a_batch_or_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n in (("train", 3000), ("valid", 300), ("test", 300)):
        np.save(folder / f"{split}.npy", correlated_rows(n, 8, seed=n).astype(np.uint8))
    assert isinstance(load_dataset("files", folder).train, MappedRows)

    reads: list[int] = []
    read = MappedRows.__getitem__

    def recorded(self: MappedRows, index) -> np.ndarray:
        rows = read(self, index)
        reads.append(len(rows))
        return rows

    def refused(self: RowStore, *args) -> np.ndarray:
        raise AssertionError("a whole split was read into memory")

    monkeypatch.setattr(MappedRows, "__getitem__", recorded)
    monkeypatch.setattr(RowStore, "__array__", refused)
    train_tiny(tmp_path / "run", folder, epochs=1, batch_size=50)
    assert reads.count(50) == 3000 // 50  # the training batches
    assert max(reads) <= 2000  # evaluation's chunks (member_log_probs)


def test_the_chunked_check_names_the_file_and_the_row_of_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.zeros((10, 4), dtype=np.float64)
    rows[7, 2] = 0.5
    np.save(tmp_path / "rows.npy", rows)
    monkeypatch.setattr(data_module, "CHECK_BYTES", 4 * 8)  # one row per chunk
    with pytest.raises(DataError, match=r"rows\.npy: row 7, column 2: found 0\.5"):
        load_dataset("files", tmp_path / "rows.npy")


def resident_kib(path: Path) -> int:
    """This process's resident memory in the mapping of ``path`` (Linux /proc/self/smaps)."""
    blocks = Path("/proc/self/smaps").read_text().split("\n")
    for i, line in enumerate(blocks):
        if line.endswith(str(path)):
            rss = next(b for b in blocks[i + 1 :] if b.startswith("Rss:"))
            return int(rss.split()[1])
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's smaps")
def test_reads_leave_none_of_the_file_resident(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    np.save(path, np.ones((8192, 1024), dtype=np.uint8))  # 8 MiB
    rows = MappedRows(np.load(path, mmap_mode="r"))
    assert rows[:].sum() == 8192 * 1024
    assert resident_kib(path) == 0
    touched = int(np.asarray(rows.array).sum())  # the raw mapping, read without dropping
    assert touched == 8192 * 1024 and resident_kib(path) > 4096
    drop_pages(rows.array)
    assert resident_kib(path) == 0
