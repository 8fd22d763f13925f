"""The paper benchmark's own machinery (export, offline figures, the served round trip) on a tiny
.npz, from a checkout with no bench-results folder yet: a 45-minute MNIST run must not be lost to
a missing log folder after its training (it once was)."""

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import correlated_rows, train_tiny


@pytest.mark.slow
def test_measure_serves_the_figure_it_computes_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.bench import bench_http, paper_uci

    data = tmp_path / "tiny.npz"
    sizes = {"train": 600, "valid": 200, "test": 200}
    np.savez(
        data, **{f"{s}_data": correlated_rows(n, 8, i) for i, (s, n) in enumerate(sizes.items())}
    )
    run = tmp_path / "run"
    train_tiny(run, data, source="npz")
    results = tmp_path / "bench-results"
    monkeypatch.setattr(bench_http, "RESULTS", results)

    measured = paper_uci.measure("mushrooms", data, tmp_path / "out", reuse=run)

    assert results.is_dir()
    assert measured["rows"] == sizes and measured["dim"] == 8 and measured["members"] == 4
    # Chosen on validation alone, then served: HTTP answers the offline test figure.
    assert measured["chosen"] == min(("mixture", "product"), key=measured["valid"].__getitem__)
    assert measured["http_gap"] <= paper_uci.PARITY_NATS
    assert measured["test"]["product_bound"] >= measured["test"]["product"]
    assert (tmp_path / "out" / "artifact-mushrooms" / "manifest.json").exists()
