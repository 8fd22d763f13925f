"""The study pipeline end to end on digits with tiny settings, and pruning at export."""

import dataclasses
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from model.study import TINY, main
from service.inference.engine import Engine

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("study")
    assert main(["--out", str(out), "--preset", "tiny", "--runs", str(out / "runs")]) == 0
    return out, json.loads((out / "study-digits.json").read_text())


def test_every_pool_is_measured(study: tuple[Path, dict]) -> None:
    _, results = study
    assert [p["num_masks"] for p in results["pools"]] == list(TINY.pool_sizes)
    for pool in results["pools"]:
        for split in ("valid", "test"):
            row = pool[split]
            # Jensen: the uniform mixture is never worse than its mean member.
            assert row["uniform_mixture"] <= row["mean_member"] + 1e-9
            assert row["best_member"] <= row["mean_member"] + 1e-9
            combined = pool["combinations"][split]
            assert combined["poe_conservative"] >= combined["poe"]
            assert combined["logit_average_lower_bound"] <= combined["logit_average_estimate"]
        # EM starts at uniform and never lowers the validation likelihood.
        assert pool["valid"]["em_mixture"] <= pool["valid"]["uniform_mixture"] + 1e-9
        poe = pool["combinations"]["poe_normaliser"]
        if pool["num_masks"] == 1:
            assert poe is None
        else:
            assert poe["log_z"] <= poe["log_z_upper"] <= 0
            stopped = poe["log_z_se"] < TINY.target_relative_se
            assert stopped or poe["num_samples"] >= TINY.max_samples


def test_alpha_sweeps_and_first_k(study: tuple[Path, dict]) -> None:
    _, results = study
    assert sorted(results["alpha_sweeps"]) == sorted(str(k) for k in TINY.alpha_pools)
    for k, rows in results["alpha_sweeps"].items():
        for row in rows:
            assert len(row["weights"]) == int(k)
            assert np.isclose(sum(row["weights"]), 1)
            assert row["nonzero"] == sum(w > 0 for w in row["weights"])
    curve = results["first_k_test"]
    largest = results["pools"][-1]
    assert len(curve) == largest["num_masks"]
    assert np.isclose(curve[-1], largest["test"]["uniform_mixture"], atol=1e-3)
    assert curve[0] >= largest["test"]["best_member"] - 1e-9  # member 0 is one of the members
    path = results["backward_elimination"]
    assert [len(row["kept"]) for row in path] == list(range(len(curve), 0, -1))
    assert np.isclose(path[0]["test"], curve[-1])
    assert all(set(b["kept"]) < set(a["kept"]) for a, b in itertools.pairwise(path))
    pruned = results["pruning"]
    assert pruned["kept"] < largest["num_masks"]
    assert pruned["test_nll_pruned"] > 0 and pruned["pruned_rows_per_second"] > 0


def test_figures_and_tables_are_written(study: tuple[Path, dict]) -> None:
    out, _ = study
    names = {"nll-vs-masks", "em-weights", "poe-vs-mixture", "first-k"}
    for name in names:
        assert (out / "figures" / f"digits-{name}.png").read_bytes()[:8] == PNG_MAGIC
    tables = (out / "study-digits.md").read_text()
    assert len(re.findall(r"^\| \d+ \| valid \|", tables, re.MULTILINE)) == len(TINY.pool_sizes)


def test_pruned_export_keeps_the_mixture(tiny_trained, tmp_path: Path) -> None:
    from model.export import export

    weights = np.array([0.5, 0.0, 0.5, 0.0])
    report = dataclasses.replace(
        tiny_trained.report, mixture_weights=weights.tolist(), weights_kind="em"
    )
    trained = dataclasses.replace(tiny_trained, report=report)
    export(trained, tmp_path / "full")
    manifest, _ = export(trained, tmp_path / "pruned", prune=True)
    assert manifest.num_members == 2
    assert manifest.pruned_members == [0, 2]
    full, pruned = Engine.load(tmp_path / "full"), Engine.load(tmp_path / "pruned")
    rows = (np.random.default_rng(0).random((64, full.dim)) < 0.5).astype(np.float32)
    np.testing.assert_allclose(
        pruned.member_log_probs(rows), full.member_log_probs(rows)[:, [0, 2]], atol=1e-4
    )
    np.testing.assert_allclose(
        pruned.log_likelihood(rows).log_likelihood, full.log_likelihood(rows).log_likelihood, 1e-5
    )


def test_shipped_artifact_study(digits_artifact: Path, tmp_path: Path) -> None:
    from model.study import study_shipped

    result = study_shipped(digits_artifact, tmp_path, max_samples=20_000, seed=0)
    for split in ("valid", "test"):
        row = result[split]
        assert row["poe_conservative"] >= row["poe"]
        assert row["logit_average_lower_bound"] <= row["logit_average_estimate"]
    assert result["poe_normaliser"]["num_samples"] <= 20_000
    for name in ("shipped-samples.png", "shipped-completions.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
