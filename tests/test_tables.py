"""Tables with a header (model.tables): CSV and Parquet files or folders, and the built-in tables,
as Datasets whose columns are named dimensions, declared by name in a schema file or inferred;
and the refusals, each naming the file, the data row (from 1, the header not counted) and the
column."""

import json

import numpy as np
import pandas as pd
import pytest

from model.cli import train_parser
from model.config import preset
from model.data import DataError, load_dataset
from model.table_sources import TABLE_SOURCES
from service.contract.schema import Bernoulli, Categorical, GaussianMixture, Ordinal


def table(rows: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "colour": rng.choice(["red", "green", "blue"], rows),
            "flag": rng.integers(0, 2, rows),
            "size": rng.integers(1, 5, rows),  # 1..4: ordinal of 5 levels (0 unused)
            "height": rng.normal(170.0, 10.0, rows),
            "ok": rng.random(rows) < 0.5,
        }
    )


def write(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_is_split_80_10_10_and_its_families_inferred(tmp_path, suffix):
    frame = table()
    data = load_dataset("table", write(frame, tmp_path / f"rows{suffix}"))
    assert (len(data.train), len(data.valid), len(data.test)) == (40, 5, 5)
    assert data.name == "table" and data.schema_origin == "inferred"
    assert data.train.dtype == np.float32
    colour, flag, size, height, ok = data.schema.dimensions
    assert colour == Categorical(name="colour", classes=3, labels=["blue", "green", "red"])
    assert flag == Bernoulli(name="flag")
    assert size == Ordinal(name="size", levels=5, components=5)
    assert ok == Categorical(name="ok", classes=2, labels=["False", "True"])
    assert isinstance(height, GaussianMixture) and height.name == "height"
    assert height.components == 5
    # Mean and scale are the training split's (ddof 0), not the whole table's.
    train_heights = data.train[:, 3].astype(np.float64)
    assert height.mean == pytest.approx(train_heights.mean(), rel=1e-6)
    assert height.scale == pytest.approx(train_heights.std(), rel=1e-6)
    assert height.mean != pytest.approx(frame["height"].mean(), rel=1e-9)
    # Every row is there once, categories as class indices.
    every = np.concatenate([data.train, data.valid, data.test])
    expected = np.column_stack(
        [
            frame["colour"].map({"blue": 0, "green": 1, "red": 2}),
            frame["flag"],
            frame["size"],
            frame["height"].astype(np.float32),
            frame["ok"].astype(int),
        ]
    ).astype(np.float32)
    np.testing.assert_array_equal(np.unique(every, axis=0), np.unique(expected, axis=0))
    assert data.schema.first_invalid(every) is None


def test_the_seeded_split_is_reproducible_and_csv_equals_parquet(tmp_path):
    frame = table()
    first = load_dataset("table", write(frame, tmp_path / "rows.csv"))
    again = load_dataset("table", tmp_path / "rows.csv")
    parquet = load_dataset("table", write(frame, tmp_path / "rows.parquet"))
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(first.split(split), again.split(split))
        np.testing.assert_allclose(first.split(split), parquet.split(split))
    assert first.schema == again.schema


def test_a_schema_file_declares_columns_by_name(tmp_path):
    path = write(table(), tmp_path / "rows.csv")
    columns = [  # not in the header's order; labels in an order of their own
        {"name": "height", "family": "gaussian_mixture", "components": 3},
        {"name": "ok", "family": "categorical", "classes": 2, "labels": ["True", "False"]},
        {"name": "size", "family": "ordinal", "levels": 10, "components": 2},
        {"name": "flag", "family": "gaussian_mixture", "mean": 0.5, "scale": 2.0},
        {
            "name": "colour",
            "family": "categorical",
            "classes": 3,
            "labels": ["red", "green", "blue"],
        },
    ]
    (tmp_path / "rows.schema.json").write_text(json.dumps({"columns": columns}))
    data = load_dataset("table", path)
    assert data.schema_origin == str(tmp_path / "rows.schema.json")
    colour, flag, size, height, ok = data.schema.dimensions  # the header's order
    assert colour.labels == ["red", "green", "blue"] and ok.labels == ["True", "False"]
    assert size == Ordinal(name="size", levels=10, components=2)
    assert flag == GaussianMixture(name="flag", components=5, mean=0.5, scale=2.0)  # as given
    assert height.components == 3  # fitted on train
    assert height.mean == pytest.approx(data.train[:, 3].astype(np.float64).mean(), rel=1e-6)
    every = np.concatenate([data.train, data.valid, data.test])
    assert (every[:, 0] == 0).sum() == (table()["colour"] == "red").sum()  # red is class 0


def test_a_folder_of_train_valid_test_tables(tmp_path):
    frame = table(60)
    write(frame[:40], tmp_path / "train.csv")
    write(frame[40:50][list(reversed(frame.columns))], tmp_path / "valid.parquet")  # reordered
    write(frame[50:], tmp_path / "test.csv")
    data = load_dataset("table", tmp_path)
    assert (len(data.train), len(data.valid), len(data.test)) == (40, 10, 10)
    assert [d.name for d in data.schema.dimensions] == list(frame.columns)
    np.testing.assert_allclose(data.valid[:, 3], frame["height"][40:50], rtol=1e-6)
    height = data.schema.dimensions[3]
    assert height.mean == pytest.approx(frame["height"][:40].mean())
    assert height.scale == pytest.approx(frame["height"][:40].std(ddof=0))
    (tmp_path / "schema.json").write_text(
        json.dumps(
            {
                "columns": [
                    {"name": name, "family": "gaussian_mixture"}
                    for name in ("flag", "size", "height")
                ]
                + [
                    {
                        "name": "colour",
                        "family": "categorical",
                        "classes": 3,
                        "labels": ["blue", "green", "red"],
                    },
                    {
                        "name": "ok",
                        "family": "categorical",
                        "classes": 2,
                        "labels": ["False", "True"],
                    },
                ]
            }
        )
    )
    declared = load_dataset("table", tmp_path)
    assert declared.schema_origin == str(tmp_path / "schema.json")
    assert declared.schema.dimensions[1].family == "gaussian_mixture"


def refused(tmp_path, frame, match, name="rows.csv", **options):
    path = tmp_path / name
    if isinstance(frame, str):
        path.write_text(frame)
    else:
        write(frame, path)
    with pytest.raises(DataError, match=match):
        load_dataset("table", path, **options)


def test_a_missing_cell_is_refused_unless_its_rows_are_dropped(tmp_path):
    frame = table()
    frame.loc[2, "height"] = np.nan  # data row 3
    frame.loc[6, "colour"] = None  # data row 7
    refused(tmp_path, frame, r"rows.csv: row 3, column 'height': missing cell .*--missing drop")
    refused(tmp_path, frame, r"rows.parquet: row 3, column 'height'", name="rows.parquet")
    data = load_dataset("table", tmp_path / "rows.csv", missing="drop")
    assert sum(data.split_sizes()[s] for s in ("train", "valid", "test")) == 48
    assert not np.isnan(np.concatenate([data.train, data.valid, data.test])).any()
    frame.loc[9, "height"] = np.inf  # rows keep their numbers in the file after a drop
    refused(tmp_path, frame, r"row 10, column 'height': inf is not a finite number", missing="drop")
    with pytest.raises(DataError, match="missing='keep': choose refuse or drop"):
        load_dataset("table", tmp_path / "rows.csv", missing="keep")
    with pytest.raises(DataError, match="applies to tables only"):
        load_dataset("digits", missing="drop")


def test_a_non_finite_number_is_refused(tmp_path):
    text = "a,b\n1.5,2\n-inf,3\n"
    refused(tmp_path, text, r"rows.csv: row 2, column 'a': -inf is not a finite number")


def test_a_column_of_a_single_value_is_refused(tmp_path):
    frame = table().assign(const=7.0)
    refused(tmp_path, frame, r"rows.csv: column 'const' holds the single value 7.0 in every row")


def test_a_file_without_a_header_or_with_duplicate_names_is_refused(tmp_path):
    refused(tmp_path, "1,2,3\n4,5,6\n", r"rows.csv: the first line .* a table needs a header")
    refused(tmp_path, "a,b,a\n1,2,3\n", r"rows.csv: duplicate column name 'a'")
    refused(tmp_path, "a,,c\n1,2,3\n", r"rows.csv: header cell 2 is empty")
    refused(tmp_path, "", r"rows.csv is empty")
    refused(tmp_path, "a,b\n", r"rows.csv: a header but no data rows")


def test_splits_with_different_columns_are_refused(tmp_path):
    frame = table(60)
    write(frame[:40], tmp_path / "train.csv")
    write(frame[40:50].drop(columns="size"), tmp_path / "valid.csv")
    write(frame[50:].assign(extra=1.0), tmp_path / "test.csv")
    with pytest.raises(
        DataError,
        match=r"valid.csv: its columns differ from .*train.csv's: "
        r"lacks 'size'",
    ):
        load_dataset("table", tmp_path)
    write(frame[40:50], tmp_path / "valid.csv")
    with pytest.raises(DataError, match=r"test.csv: .*has 'extra' besides"):
        load_dataset("table", tmp_path)


def schema_file(tmp_path, **changes):
    columns = {
        "colour": {"family": "categorical", "classes": 3, "labels": ["red", "green", "blue"]},
        "flag": {"family": "bernoulli"},
        "size": {"family": "ordinal", "levels": 5},
        "height": {"family": "gaussian_mixture"},
        "ok": {"family": "categorical", "classes": 2, "labels": ["False", "True"]},
    }
    columns.update(changes)
    document = {"columns": [{"name": n, **c} for n, c in columns.items() if c is not None]}
    (tmp_path / "rows.schema.json").write_text(json.dumps(document))


def test_a_declared_schemas_refusals(tmp_path):
    frame = table()
    frame.loc[4, "colour"] = "purple"
    schema_file(tmp_path)
    refused(
        tmp_path,
        frame,
        r"rows.csv: row 5, column 'colour': 'purple' is not among its "
        r"labels \('red', 'green', 'blue'\)",
    )
    frame = table()
    frame.loc[11, "size"] = 7
    refused(
        tmp_path,
        frame,
        r"rows.csv: row 12, column 'size': 7 is outside its levels 0..4 "
        r"\(ordinal\)",
    )
    frame = table()
    schema_file(tmp_path, size=None)
    refused(tmp_path, frame, r"the schema file must declare each header column: undeclared 'size'")
    schema_file(tmp_path, weight={"family": "bernoulli"})
    refused(tmp_path, frame, r"not in the header 'weight'")
    (tmp_path / "rows.schema.json").write_text(
        json.dumps({"columns": [{"family": "bernoulli"}, {"family": "bernoulli"}]})
    )
    refused(tmp_path, frame, r"column 0 has no name; a table's columns are matched by name")


@pytest.mark.parametrize(
    ("source", "shape"),
    [
        ("randhie", (20190, 10)),
        ("fair", (6366, 9)),
        ("wine", (178, 14)),
        ("breast-cancer", (569, 31)),
    ],
)
def test_each_built_in_table_loads_without_a_download(source, shape):
    data = load_dataset(source)
    every = np.concatenate([data.train, data.valid, data.test])
    assert every.shape == shape and not np.isnan(every).any()
    assert len(data.train) == int(0.8 * shape[0]) and data.location == TABLE_SOURCES[source][1]
    assert data.schema.first_invalid(every) is None
    assert all(d.name for d in data.schema.dimensions)
    families = {d.name: d.family for d in data.schema.dimensions}
    if source == "randhie":
        assert {n for n, f in families.items() if f == "bernoulli"} == {
            "idp",
            "hlthg",
            "hlthf",
            "hlthp",
        }
        assert families["lpi"] == families["fmde"] == "gaussian_mixture"
    if source == "fair":
        assert families["rate_marriage"] == "ordinal" and families["affairs"] == "gaussian_mixture"
    if source in ("wine", "breast-cancer"):
        target = data.schema.dimensions[-1]
        assert target.family == "categorical"
        assert target.labels == (
            ["class_0", "class_1", "class_2"] if source == "wine" else ["benign", "malignant"]
        )
        assert set(families.values()) == {"gaussian_mixture", "categorical"}


def test_missing_is_an_option_of_made_train_and_the_presets():
    args = train_parser().parse_args(["--out", "x", "--source", "table", "--missing", "drop"])
    assert args.missing == "drop"
    assert preset("tabular").missing == "refuse"
    assert preset("tabular", missing=args.missing).missing == "drop"
    assert preset("tabular").source == "wine"
    for name in TABLE_SOURCES:
        assert preset(f"table-{name}").source == name


def test_the_manifest_stores_names_labels_and_scaling():
    from model.train import dataset_info

    data = load_dataset("wine")
    dimensions = dataset_info(data).dimensions
    assert dimensions[0]["name"] == "alcohol" and dimensions[0]["family"] == "gaussian_mixture"
    assert dimensions[0]["mean"] == data.schema.dimensions[0].mean > 0
    assert dimensions[-1]["labels"] == ["class_0", "class_1", "class_2"]
