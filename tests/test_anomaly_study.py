"""The anomaly study's scoring (model/anomaly_study.py) on cases with a known answer; the study's
training is what made-train already tests."""

from pathlib import Path

import numpy as np
import pytest

from model import anomaly_study as study
from model.data import Dataset, load_dataset
from model.exported import ExportedMembers
from service.contract import conformal


def test_detection_arithmetic_on_a_known_case() -> None:
    calibration = np.arange(1.0, 100.0)
    normal = calibration + 0.5  # p = (1 + k) / 100 for k = 1..99: p <= 0.05 for k <= 4
    anomalous = np.array([-5.0, -4.0, 50.5])  # two below everything, one tied with a normal row
    found = study.detection(normal, anomalous, calibration, alpha=0.05)
    assert found.false_positive_rate == pytest.approx(4 / 99)  # k = 4 sits at p = alpha
    assert found.detection_rate == pytest.approx(2 / 3)
    # Pairs (anomaly, normal) ranked right: 99 + 99 + (49 above it + half of its tie).
    assert found.auroc == pytest.approx((99 + 99 + 49.5) / 297)


def test_scores_are_the_ones_the_artifact_calibrated(digits_artifact: Path) -> None:
    members = ExportedMembers.open(digits_artifact)
    rows = load_dataset("digits").valid[members.manifest.calibration.rows]
    scores = study.typicality(members, rows)
    for score, stored in study.calibration_of(members.manifest).items():
        np.testing.assert_allclose(np.sort(scores[score]), stored, rtol=0, atol=1e-6)


def test_planted_anomalies_below_every_normal_row_are_all_found(digits_artifact: Path) -> None:
    members = ExportedMembers.open(digits_artifact)
    normal_rows = load_dataset("digits").test
    # Every pixel on, but for one: nothing like a digit, and simpler than one to a compressor.
    planted = np.ones((8, normal_rows.shape[1]), dtype=np.float32)
    planted[np.arange(8), np.arange(8) * 8] = 0
    normal, anomalous = study.typicality(members, normal_rows), study.typicality(members, planted)
    calibration = study.calibration_of(members.manifest)
    for score in study.SCORES:  # the case's premise, for both scores
        assert anomalous[score].max() < min(normal[score].min(), calibration[score][0])
    found = study.scenario("planted", "digits", normal, anomalous, calibration, alpha=0.05)
    assert (found["normal_rows"], found["anomalous_rows"]) == (len(normal_rows), 8)
    assert found["anomalous_means"]["complexity"] == pytest.approx(
        conformal.compressed_nats(planted).mean()
    )
    for score in study.SCORES:
        assert found[score]["auroc"] == 1.0
        assert found[score]["detection_rate"] == 1.0  # p = 1 / (n + 1) <= 0.05
        assert found[score]["false_positive_rate"] <= 0.1
    assert "| planted | digits | 300 / 8 | 1.000 | 1.000 |" in study.table(
        {"alpha": 0.05, "scenarios": [found]}
    )


def test_flips_change_exactly_the_share_of_pixels_asked_for() -> None:
    rows = (np.random.default_rng(0).random((50, 784)) < 0.3).astype(np.float32)
    flipped = study.flip_pixels(rows, 0.05, np.random.default_rng(1))
    changed = flipped != rows
    assert (changed.sum(axis=1) == 39).all()  # round(0.05 * 784)
    assert not (changed[0] == changed[1]).all()  # each row its own pixels
    again = study.flip_pixels(rows, 0.05, np.random.default_rng(1))
    np.testing.assert_array_equal(flipped, again)


def test_the_held_out_class_leaves_every_split(tmp_path: Path) -> None:
    rows = {split: np.eye(6, dtype=np.float32)[i:] for i, split in enumerate(("train", "valid"))}
    rows["test"] = np.eye(6, dtype=np.float32)
    data = Dataset("t", rows["train"], rows["valid"], rows["test"], "none")
    labels = {split: np.arange(len(values)) % 3 for split, values in rows.items()}
    folder = study.write_without_class(data, labels, held_out=1, folder=tmp_path / "nine")
    written = load_dataset("files", folder)
    for split, values in rows.items():
        np.testing.assert_array_equal(written.split(split), values[labels[split] != 1])
