"""Every data source loads binary splits, and bad data gets a clear error instead of a cast."""

import gzip
import struct

import numpy as np
import pytest

from model.data import FASHION_MNIST_DIR, DataError, load_dataset, read_idx


def write_idx(path, images: np.ndarray) -> None:
    header = struct.pack(">4B", 0, 0, 8, images.ndim) + struct.pack(
        f">{images.ndim}I", *images.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + images.astype(np.uint8).tobytes())


def test_digits_is_binary_with_fixed_split():
    data = load_dataset("digits")
    assert data.image_shape == (8, 8) and data.dim == 64
    assert (len(data.train), len(data.valid), len(data.test)) == (1197, 300, 300)
    for split in (data.train, data.valid, data.test):
        assert set(np.unique(split)) <= {0.0, 1.0}
    np.testing.assert_array_equal(load_dataset("digits").test, data.test)


def test_idx_folder_split_and_threshold(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (50_010, 2, 3))
    test = rng.integers(0, 256, (7, 2, 3))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    data = load_dataset("mnist", tmp_path)
    assert data.image_shape == (2, 3)
    assert (len(data.train), len(data.valid), len(data.test)) == (50_000, 10, 7)
    np.testing.assert_array_equal(data.test, (test.reshape(7, 6) > 127).astype(np.float32))
    np.testing.assert_array_equal(data.valid, (train[50_000:].reshape(10, 6) > 127))


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    data = load_dataset("fashion-mnist")
    assert data.image_shape == (28, 28)
    assert (len(data.train), len(data.valid), len(data.test)) == (50_000, 10_000, 10_000)


def test_made_npz_format(tmp_path):
    rng = np.random.default_rng(1)
    splits = {
        f"{s}_data": (rng.random((5, 4)) < 0.5).astype(np.float64)
        for s in ("train", "valid", "test")
    }
    np.savez(tmp_path / "binarized.npz", **splits)
    data = load_dataset("npz", tmp_path / "binarized.npz")
    np.testing.assert_array_equal(data.valid, splits["valid_data"])
    assert data.image_shape is None


def test_own_csv_file_is_split(tmp_path):
    rows = (np.random.default_rng(2).random((50, 3)) < 0.5).astype(int)
    np.savetxt(tmp_path / "rows.csv", rows, fmt="%d", delimiter=",")
    data = load_dataset("files", tmp_path / "rows.csv")
    assert (len(data.train), len(data.valid), len(data.test)) == (40, 5, 5)
    assert sorted(map(tuple, np.concatenate([data.train, data.valid, data.test]))) == sorted(
        map(tuple, rows.astype(np.float32))
    )


def save_folder(folder, **splits):
    folder.mkdir()
    for name, rows in splits.items():
        np.save(folder / f"{name}.npy", np.asarray(rows))
    return folder


GOOD = [[0, 1], [1, 0]]


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        # Integers past 1 are levels (an inferred ordinal column), a fraction is nothing.
        (
            dict(train=[[0, 0.5], [1, 0]], valid=GOOD, test=GOOD),
            r"train\.npy: row 0, column 1: found 0\.5; without a schema file, values must be 0",
        ),
        (dict(train=[[0, 0.5]], valid=GOOD, test=GOOD), "found 0.5"),
        (dict(train=[[0, np.nan]], valid=GOOD, test=GOOD), "NaN"),
        (dict(train=np.zeros((0, 2)), valid=GOOD, test=GOOD), "empty"),
        (dict(train=GOOD, valid=[[0, 1, 1]], test=GOOD), "differ in dimension"),
        (dict(train=[0, 1], valid=GOOD, test=GOOD), "2-D rows"),
    ],
)
def test_bad_npy_data_is_refused(tmp_path, splits, message):
    folder = save_folder(tmp_path / "data", **splits)
    with pytest.raises(DataError, match=message):
        load_dataset("files", folder)


def test_ragged_csv_is_refused(tmp_path):
    (tmp_path / "rows.csv").write_text("0,1,1\n1,0\n")
    with pytest.raises(DataError, match="ragged rows, line 2"):
        load_dataset("files", tmp_path / "rows.csv")


def test_ragged_object_npy_is_refused(tmp_path):
    np.save(tmp_path / "rows.npy", np.array([[0, 1], [1]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"readable \.npy"):
        load_dataset("files", tmp_path / "rows.npy")


@pytest.mark.parametrize(
    ("source", "path", "message"),
    [
        ("nope", None, "unknown data source"),
        ("mnist", None, "needs --data-dir"),
        ("npz", "missing.npz", "does not exist"),
        ("idx", "no-such-folder", "does not exist"),
    ],
)
def test_bad_sources_are_named(tmp_path, source, path, message):
    with pytest.raises(DataError, match=message):
        load_dataset(source, tmp_path / path if path else None)


def test_npz_missing_split_and_bad_idx(tmp_path):
    np.savez(tmp_path / "partial.npz", train_data=np.zeros((2, 2)))
    with pytest.raises(DataError, match="valid_data, test_data"):
        load_dataset("npz", tmp_path / "partial.npz")
    (tmp_path / "junk.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk.gz")
