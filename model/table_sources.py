"""Built-in tables that ship inside installed packages (statsmodels, scikit-learn): named sources
that need no download, read as DataFrames with a header for ``model.tables``.

pandas, statsmodels and scikit-learn are imported only when a table is loaded, so that importing
the source names costs nothing."""

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _randhie() -> "pd.DataFrame":
    """RAND Health Insurance Experiment: 20,190 rows of 10 (visits, coinsurance, health flags)."""
    from statsmodels.datasets import randhie

    return randhie.load_pandas().data


def _fair() -> "pd.DataFrame":
    """Fair's extramarital affairs survey: 6,366 rows of 9 (ratings 1..5, ages, years, time)."""
    from statsmodels.datasets import fair

    return fair.load_pandas().data


def _sklearn_with_class(loader: Callable) -> "pd.DataFrame":
    """A scikit-learn table with its target as the class names, so that it is inferred as a
    labelled categorical column rather than as integers."""
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    frame["target"] = [str(bunch.target_names[i]) for i in bunch.target]
    return frame


def _wine() -> "pd.DataFrame":
    """UCI wine: 178 rows of 13 chemical measurements and the cultivar (3 classes)."""
    from sklearn.datasets import load_wine

    return _sklearn_with_class(load_wine)


def _breast_cancer() -> "pd.DataFrame":
    """Wisconsin diagnostic breast cancer: 569 rows of 30 cell measurements and the diagnosis."""
    from sklearn.datasets import load_breast_cancer

    return _sklearn_with_class(load_breast_cancer)


TABLE_SOURCES: dict[str, tuple[Callable[[], "pd.DataFrame"], str]] = {
    "randhie": (_randhie, "statsmodels.datasets.randhie"),
    "fair": (_fair, "statsmodels.datasets.fair"),
    "wine": (_wine, "sklearn.datasets.load_wine"),
    "breast-cancer": (_breast_cancer, "sklearn.datasets.load_breast_cancer"),
}
