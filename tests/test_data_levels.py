"""Sources of levels: each dimension's level index as rows, with the schema that says its family;
and the files source's schema files, inference and refusals naming the file, row and column."""

import json

import numpy as np
import pytest

import model.data as data_module
from model.data import FASHION_MNIST_DIR, DataError, load_dataset
from service.contract.schema import Bernoulli, Categorical, Ordinal, Schema
from tests.test_data import write_idx


@pytest.fixture(scope="module")
def digits_levels():
    return load_dataset("digits-levels")


def test_digits_levels_are_the_17_grey_levels_on_the_digits_split(digits_levels):
    data, binary = digits_levels, load_dataset("digits")
    assert data.image_shape == (8, 8) and data.dim == 64
    assert data.binarization == "none: 17 grey levels (0..16)"
    assert (len(data.train), len(data.valid), len(data.test)) == (1197, 300, 300)
    every = np.concatenate([data.train, data.valid, data.test])
    assert every.dtype == np.float32
    np.testing.assert_array_equal(np.unique(every), np.arange(17, dtype=np.float32))
    for split in ("train", "valid", "test"):  # the same rows, in the same order, as digits
        np.testing.assert_array_equal(
            binary.split(split), (data.split(split) >= 8).astype(np.float32)
        )
    assert data.schema == Schema([Ordinal(levels=17, components=5)] * 64)
    assert data.schema_origin == "built in"
    assert data.schema.first_invalid(every) is None
    assert binary.schema is None and binary.schema_origin is None


def test_digits_levels_categorical_has_17_classes(digits_levels):
    data = load_dataset("digits-levels-categorical")
    assert data.name == "digits-levels-categorical"
    assert data.schema == Schema([Categorical(classes=17)] * 64)
    assert data.schema.describe() == "64 categorical C=17"
    np.testing.assert_array_equal(data.test, digits_levels.test)


def write_idx_folder(folder, train, test):
    folder.mkdir(exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", train)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test)
    return folder


def test_idx_8bit_keeps_the_bytes_as_ordinal_levels(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (50_010, 2, 3))
    test = rng.integers(0, 256, (7, 2, 3))
    folder = write_idx_folder(tmp_path / "idx", train, test)
    data = load_dataset("mnist-8bit", folder)
    assert data.image_shape == (2, 3) and data.binarization == "none: 8-bit (0..255)"
    assert (len(data.train), len(data.valid), len(data.test)) == (50_000, 10, 7)
    np.testing.assert_array_equal(data.test, test.reshape(7, 6).astype(np.float32))
    np.testing.assert_array_equal(data.valid, train[50_000:].reshape(10, 6))
    assert data.train.dtype == np.float32 and data.train.max() == 255
    assert data.schema == Schema([Ordinal(levels=256, components=5)] * 6)
    binary = load_dataset("idx", folder)  # the same images, thresholded as before
    assert binary.schema is None
    np.testing.assert_array_equal(binary.test, (data.test > 127).astype(np.float32))
    assert load_dataset("idx-8bit", folder).name == "idx-8bit"
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("idx-8bit")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_8bit_from_debian_package():
    data = load_dataset("fashion-mnist-8bit")
    assert data.image_shape == (28, 28)
    assert (len(data.train), len(data.valid), len(data.test)) == (50_000, 10_000, 10_000)
    assert data.schema.describe() == "784 ordinal L=256 M=5"
    assert data.test.max() == 255 and data.schema.first_invalid(data.test[:500]) is None


COLUMNS = [
    {"name": "age_band", "family": "ordinal", "levels": 5},
    {"name": "colour", "family": "categorical", "classes": 3, "labels": ["red", "green", "blue"]},
    {"name": "flag", "family": "bernoulli"},
]


def write_schema(path, columns=COLUMNS):
    path.write_text(json.dumps({"columns": columns}))
    return path


def save_folder(folder, schema=None, **splits):
    folder.mkdir()
    for name, rows in splits.items():
        np.save(folder / f"{name}.npy", np.asarray(rows))
    if schema is not None:
        write_schema(folder / "schema.json", schema)
    return folder


LEVELS = [[4, 2, 1], [0, 0, 0], [3, 1, 1]]


def test_folder_with_schema_json_gives_its_levels(tmp_path):
    folder = save_folder(tmp_path / "data", COLUMNS, train=LEVELS, valid=LEVELS, test=LEVELS[:1])
    data = load_dataset("files", folder)
    assert data.schema == Schema(
        [
            Ordinal(name="age_band", levels=5),
            Categorical(name="colour", classes=3, labels=["red", "green", "blue"]),
            Bernoulli(name="flag"),
        ]
    )
    assert data.schema_origin == str(folder / "schema.json")
    assert data.binarization == "none: levels as given"
    np.testing.assert_array_equal(data.train, np.array(LEVELS, dtype=np.float32))
    assert data.test[:].dtype == np.float32


def test_single_csv_with_its_schema_file_maps_labels(tmp_path):
    lines = ["4,red,1", "0,blue,0", "2,1,1", "1, green ,0"] * 5  # a labelled cell or its index
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    write_schema(tmp_path / "rows.schema.json")
    data = load_dataset("files", tmp_path / "rows.csv")
    assert data.schema_origin == str(tmp_path / "rows.schema.json")
    assert (len(data.train), len(data.valid), len(data.test)) == (16, 2, 2)
    every = np.concatenate([data.train, data.valid, data.test])
    expected = np.array([[4, 0, 1], [0, 2, 0], [2, 1, 1], [1, 1, 0]] * 5, dtype=np.float32)
    assert sorted(map(tuple, every)) == sorted(map(tuple, expected))


def test_unknown_label_names_file_row_and_column(tmp_path):
    (tmp_path / "rows.csv").write_text("4,red,1\n0,purple,0\n")
    write_schema(tmp_path / "rows.schema.json")
    with pytest.raises(DataError) as caught:
        load_dataset("files", tmp_path / "rows.csv")
    message = str(caught.value)
    assert str(tmp_path / "rows.csv") in message
    assert "row 1, column 1 ('colour'): unknown label 'purple'" in message
    assert "'red', 'green', 'blue'" in message


def test_inferred_schema_reads_every_split(tmp_path):
    train = [[0, 0], [1, 3], [1, 1]]
    test = [[0, 4], [1, 2]]  # level 4 only in test: train alone would say L=4
    folder = save_folder(tmp_path / "data", train=train, valid=train, test=test)
    data = load_dataset("files", folder)
    assert data.schema == Schema([Bernoulli(), Ordinal(levels=5, components=5)])
    assert data.schema_origin == "inferred"
    np.testing.assert_array_equal(data.test[:], np.array(test, dtype=np.float32))


def test_strings_are_inferred_as_categorical_with_every_splits_labels(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text("red,0,3\nblue,1,0\n blue ,1,2\n")
    (folder / "valid.csv").write_text("red,0,1\n")
    (folder / "test.csv").write_text("green,1,0\n2,0,1\n")  # labels only in test count too
    data = load_dataset("files", folder)
    assert data.schema_origin == "inferred"
    labels = ["2", "blue", "green", "red"]  # sorted; a number in a column of strings is a label
    assert data.schema == Schema(
        [Categorical(classes=4, labels=labels), Bernoulli(), Ordinal(levels=4, components=5)]
    )
    np.testing.assert_array_equal(data.train[:], [[3, 0, 3], [1, 1, 0], [1, 1, 2]])
    np.testing.assert_array_equal(data.test[:], [[2, 1, 0], [0, 0, 1]])


def test_strings_with_binary_columns_are_not_binary(tmp_path):
    (tmp_path / "rows.csv").write_text("yes,1\nno,0\n" * 10)
    data = load_dataset("files", tmp_path / "rows.csv")
    assert data.schema == Schema([Categorical(classes=2, labels=["no", "yes"]), Bernoulli()])


def test_a_header_line_is_refused_not_taken_as_labels(tmp_path):
    (tmp_path / "rows.csv").write_text("colour,size\nred,1\nblue,2\n")
    with pytest.raises(DataError) as caught:
        load_dataset("files", tmp_path / "rows.csv")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'rows.csv'}: row 0, column 1: 'size' is not a number")
    assert "no header line" in message


def test_a_non_number_where_a_schema_declares_levels_is_named(tmp_path):
    (tmp_path / "rows.csv").write_text("4,red,1\nfour,red,0\n")
    write_schema(tmp_path / "rows.schema.json")
    with pytest.raises(DataError, match=r"row 1, column 0 \('age_band'\): 'four' is not a numb"):
        load_dataset("files", tmp_path / "rows.csv")


def test_binary_files_stay_binary_without_a_schema(tmp_path):
    rows = (np.random.default_rng(2).random((50, 3)) < 0.5).astype(np.uint8)
    np.save(tmp_path / "rows.npy", rows)
    data = load_dataset("files", tmp_path / "rows.npy")
    assert data.schema is None and data.schema_origin is None
    assert data.binarization == "given as 0/1"


@pytest.mark.parametrize(
    ("bad", "found"),
    [(5, "found 5.0, expected a level 0..4"), (-1, "found -1.0"), (2.5, "found 2.5")],
)
def test_value_outside_an_ordinal_names_file_row_and_column(tmp_path, bad, found):
    test = np.array([[0, 0, 0], [1, 1, 1], [bad, 2, 0]], dtype=np.float64)
    folder = save_folder(tmp_path / "data", COLUMNS, train=LEVELS, valid=LEVELS, test=test)
    with pytest.raises(DataError) as caught:
        load_dataset("files", folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / 'test.npy'}: row 2, column 0 ('age_band'): ")
    assert found in message


def test_class_outside_a_categorical_and_nan_are_refused(tmp_path):
    (tmp_path / "rows.csv").write_text("4,red,1\n0,3,0\n")
    write_schema(tmp_path / "rows.schema.json")
    with pytest.raises(DataError, match=r"row 1, column 1 \('colour'\): found 3.0, expected a cl"):
        load_dataset("files", tmp_path / "rows.csv")
    (tmp_path / "rows.csv").write_text("4,red,1\n0,red,nan\n")
    with pytest.raises(DataError) as caught:
        load_dataset("files", tmp_path / "rows.csv")
    assert "rows.csv: row 1, column 2 ('flag'): found NaN" in str(caught.value)
    assert "no missing values" in str(caught.value)


def test_chunked_level_check_names_the_row_of_the_whole_file(tmp_path, monkeypatch):
    rows = np.zeros((10, 3), dtype=np.int64)
    rows[7, 2] = 2  # flag is Bernoulli
    np.save(tmp_path / "rows.npy", rows)
    write_schema(tmp_path / "rows.schema.json")
    monkeypatch.setattr(data_module, "CHECK_BYTES", 3 * 8)  # one row per chunk
    with pytest.raises(DataError, match=r"rows\.npy: row 7, column 2 \('flag'\): found 2\.0"):
        load_dataset("files", tmp_path / "rows.npy")


@pytest.mark.parametrize(
    ("bad", "found"),
    [(-1, "found -1.0"), (0.5, "found 0.5"), (np.nan, "found NaN"), (70_000, "found 70000.0")],
)
def test_values_that_cannot_be_inferred_are_refused(tmp_path, monkeypatch, bad, found):
    rows = np.zeros((10, 3))
    rows[:, 1] = np.arange(10)
    rows[6, 2] = bad
    np.save(tmp_path / "rows.npy", rows)
    monkeypatch.setattr(data_module, "CHECK_BYTES", 3 * 8 * 4)  # chunks of 4 rows
    with pytest.raises(DataError) as caught:
        load_dataset("files", tmp_path / "rows.npy")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'rows.npy'}: row 6, column 2: {found}")
    assert "without a schema file" in message


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"columns": COLUMNS[:2]},
            r"rows of 3 columns, but schema file .*schema\.json describes 2",
        ),
        ({"columns": [*COLUMNS[:2], {"family": "ordinal", "levels": 1}]}, r"column 2: levels: "),
        ({"columns": [COLUMNS[0], {"name": "x", "family": "gauss"}, COLUMNS[2]]}, r"1 \('x'\)"),
        (
            {"columns": [*COLUMNS[:2], {"family": "bernoulli", "levels": 2}]},
            r"column 2: levels: Ex",
        ),
        ({"cols": COLUMNS}, r'expected \{"columns": \[\.\.\.\]\}'),
    ],
)
def test_bad_schema_files_are_named(tmp_path, document, message):
    folder = save_folder(tmp_path / "data", None, train=LEVELS, valid=LEVELS, test=LEVELS)
    (folder / "schema.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match=message) as caught:
        load_dataset("files", folder)
    assert "schema.json" in str(caught.value)


def test_unreadable_schema_json_is_named(tmp_path):
    folder = save_folder(tmp_path / "data", None, train=LEVELS, valid=LEVELS, test=LEVELS)
    (folder / "schema.json").write_text("{not json")
    with pytest.raises(DataError, match=r"schema file .*schema\.json is not readable JSON"):
        load_dataset("files", folder)


def test_unknown_source_lists_the_level_sources():
    with pytest.raises(DataError) as caught:
        load_dataset("nope")
    for name in ("digits-levels", "digits-levels-categorical", "fashion-mnist-8bit", "idx-8bit"):
        assert name in str(caught.value)
