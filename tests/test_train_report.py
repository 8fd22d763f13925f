"""The typed training report: report.json and model.pt keep today's plain-dict layout, and a
model.pt written before the report was typed still loads and exports."""

import json

import torch

from model.export import export
from model.train import FINAL_MODEL, REPORT_FILE, SplitNll, TrainingReport, load_trained
from service.contract import artifact
from tests.conftest import train_tiny

REPORT_KEYS = [
    "mixture_weights",
    "weights_kind",
    "em_weights",
    "em_alpha",
    "valid",
    "test",
    "epochs_run",
    "train_seconds",
    "best_valid_uniform_nll",
]
SPLIT_KEYS = ["members", "uniform_mixture", "em_mixture", "shipped_mixture"]


def test_report_json_and_model_pt_hold_the_report_as_plain_data(tmp_path, tiny_data_dir):
    trained = train_tiny(tmp_path / "run", tiny_data_dir, epochs=2)
    text = (tmp_path / "run" / REPORT_FILE).read_text()
    on_disk = json.loads(text)
    assert list(on_disk) == REPORT_KEYS
    assert list(on_disk["valid"]) == list(on_disk["test"]) == SPLIT_KEYS
    assert on_disk["epochs_run"] == 2 and len(on_disk["test"]["members"]) == 4
    assert text == json.dumps(on_disk, indent=2) + "\n"
    assert TrainingReport.from_dict(on_disk) == trained.report
    state = torch.load(tmp_path / "run" / FINAL_MODEL, weights_only=True)
    assert state["report"] == on_disk
    assert list(state["dataset"]) == [
        "source",
        "location",
        "binarization",
        "image_shape",
        "split_sizes",
    ]
    assert load_trained(tmp_path / "run").report == trained.report


def test_a_model_pt_written_before_the_typed_report_loads_and_exports(tiny_trained, tmp_path):
    """The dicts are written out literally, as the untyped code stored them; pruning reads them."""
    path = tmp_path / FINAL_MODEL
    torch.save(
        {
            "config": tiny_trained.config.to_dict(),
            "pool": {
                "orderings": torch.as_tensor(tiny_trained.model.pool.orderings),
                "hidden_degrees": [
                    torch.as_tensor(h) for h in tiny_trained.model.pool.hidden_degrees
                ],
            },
            "model": tiny_trained.model.state_dict(),
            "dataset": {
                "source": "files",
                "location": "/old/run/data",
                "binarization": "given as 0/1",
                "image_shape": [2, 4],
                "split_sizes": {"train": 600, "valid": 200, "test": 200},
            },
            "report": {
                "mixture_weights": [0.25, 0.0, 0.75, 0.0],
                "weights_kind": "em",
                "em_weights": [0.2, 0.1, 0.6, 0.1],
                "em_alpha": 1.0,
                "valid": {
                    "members": [5.0, 5.1, 5.2, 5.3],
                    "uniform_mixture": 4.9,
                    "em_mixture": 4.8,
                    "shipped_mixture": 4.8,
                },
                "test": {
                    "members": [5.5, 5.6, 5.7, 5.8],
                    "uniform_mixture": 5.4,
                    "em_mixture": 5.3,
                    "shipped_mixture": 5.3,
                },
                "epochs_run": 7,
                "train_seconds": 1.5,
                "best_valid_uniform_nll": 4.9,
            },
        },
        path,
    )
    loaded = load_trained(path)
    assert loaded.report.valid == SplitNll([5.0, 5.1, 5.2, 5.3], 4.9, 4.8, 4.8)
    assert (loaded.report.epochs_run, loaded.report.pruned_members) == (7, None)
    assert loaded.dataset_info.image_shape == [2, 4]

    manifest, _ = export(loaded, tmp_path / "art", prune=True)
    assert manifest == artifact.read_manifest(tmp_path / "art")
    assert manifest.name == "made-files-k2-h16-16"
    assert manifest.image_shape == (2, 4)
    assert manifest.pruned_members == [0, 2]
    assert manifest.mixture_weights == [0.25, 0.75]
    assert manifest.metrics["valid"].members == [5.0, 5.2]
    assert manifest.metrics["test"].shipped_mixture == 5.3
    assert manifest.data == artifact.DataInfo(
        source="files",
        location="/old/run/data",
        binarization="given as 0/1",
        split_sizes={"train": 600, "valid": 200, "test": 200},
    )
    assert (manifest.training["epochs_run"], manifest.training["train_seconds"]) == (7, 1.5)
