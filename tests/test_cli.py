"""The command lines train digits briefly, export it, and the artifact loads in onnxruntime."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from model.cli import export_main, train_main
from model.data import load_dataset
from service.contract import artifact


def test_train_export_load_digits(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        train_main(
            [
                "--out",
                str(run),
                "--epochs",
                "2",
                "--masks",
                "2",
                "--hidden",
                "32",
                "--quiet",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert export_main([str(run / "model.pt"), "--out", str(tmp_path / "art")]) == 0
    manifest = artifact.read_manifest(tmp_path / "art")
    assert (manifest.dim, manifest.num_members, manifest.image_shape) == (64, 2, (8, 8))
    session = ort.InferenceSession(str(tmp_path / "art" / artifact.ONNX_FILE))
    rows = load_dataset("digits").test[:10]
    (log_prob,) = session.run([artifact.OUTPUT_LOG_PROB], {artifact.INPUT_X: rows})
    assert log_prob.shape == (10, 2) and np.all(log_prob < 0)
    assert "uniform" in capsys.readouterr().out


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    from model.train import Trainer

    args = ["--epochs", "3", "--masks", "2", "--hidden", "16", "--quiet", "--seed", "3"]
    assert train_main(["--out", str(tmp_path / "a"), *args]) == 0

    original = Trainer._train_epoch

    def interrupted(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_main(["--out", str(tmp_path / "b"), *args])
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    assert train_main(["--out", str(tmp_path / "b"), "--resume", *args]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert b["epochs_run"] == 3
    np.testing.assert_allclose(a["test"]["members"], b["test"]["members"], rtol=1e-6)


def test_a_checkpoint_older_than_an_option_resumes_with_its_default(tmp_path):
    """last.pt written before ``missing`` existed resumes; a real difference is still refused."""
    import torch

    args = ["--epochs", "2", "--masks", "2", "--hidden", "16", "--quiet", "--seed", "3"]
    assert train_main(["--out", str(tmp_path), *args]) == 0
    checkpoint = tmp_path / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]["missing"]
    torch.save(state, checkpoint)
    assert train_main(["--out", str(tmp_path), "--resume", *args]) == 0
    assert train_main(["--out", str(tmp_path), "--resume", *args, "--lr", "0.5"]) != 0


@pytest.mark.parametrize("dropout", ["0", "0.3"])
def test_seed_makes_runs_reproducible(tmp_path, dropout):
    import torch

    args = ["--epochs", "2", "--masks", "2", "--hidden", "16", "--quiet", "--seed", "5"]
    args += ["--dropout", dropout]
    assert train_main(["--out", str(tmp_path / "a"), *args]) == 0
    assert train_main(["--out", str(tmp_path / "b"), *args]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert a["test"] == b["test"]
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert saved["config"]["dropout"] == float(dropout)


def test_bad_data_is_an_error_not_a_crash(tmp_path, capsys):
    (tmp_path / "rows.csv").write_text("0,0.5\n1,0\n")
    code = train_main(
        [
            "--out",
            str(tmp_path / "run"),
            "--source",
            "files",
            "--data-dir",
            str(tmp_path / "rows.csv"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "without a schema file, values must be 0 or 1" in capsys.readouterr().err


def test_validating_every_few_epochs_keeps_the_best_validated_one(tmp_path):
    """--valid-every 3 over 7 epochs validates epochs 3, 6 and 7 (the last); the model kept is the
    best of those, and the unvalidated epochs are logged with no figure."""
    import torch

    args = ["--epochs", "7", "--valid-every", "3", "--masks", "2", "--hidden", "16", "--quiet"]
    assert train_main(["--out", str(tmp_path), *args]) == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validated = {r["epoch"]: r["valid_mixture_nll"] for r in records if r["valid_mixture_nll"]}
    assert sorted(validated) == [3, 6, 7]
    assert [r["best_valid_mixture_nll"] for r in records[:2]] == [None, None]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["best_valid_uniform_nll"] == pytest.approx(min(validated.values()))
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["config"]["valid_every"] == 3


@pytest.mark.parametrize(("every", "patience"), [("0", "20"), ("30", "20")])
def test_a_validation_interval_beyond_the_patience_is_refused(tmp_path, capsys, every, patience):
    args = ["--epochs", "2", "--valid-every", every, "--patience", patience, "--quiet"]
    assert train_main(["--out", str(tmp_path), *args]) == 2
    assert f"--valid-every {every} must be at least 1 and at most the patience" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("name", ["mnist-paper", "uci-nips"])
def test_a_paper_preset_trains_exports_and_serves_its_network(tmp_path, name):
    """The preset's own network (width, masks, validation interval) on a small stand-in of the
    paper's .npz (its reference data never enters the tests), one epoch instead of its schedule."""
    from model.config import preset
    from service.inference.engine import Engine

    config = preset(name)
    dim = 784 if name == "mnist-paper" else 500
    rng = np.random.default_rng(0)
    splits = {
        f"{s}_data": (rng.random((n, dim)) < 0.3)
        for s, n in [("train", 60), ("valid", 20), ("test", 20)]
    }
    np.savez(tmp_path / "paper.npz", **{k: v.astype(np.float32) for k, v in splits.items()})
    run = tmp_path / "run"
    common = ["--data-dir", str(tmp_path / "paper.npz"), "--quiet", "--epochs", "1"]
    assert train_main(["--preset", name, "--out", str(run), *common, "--valid-every", "1"]) == 0
    assert export_main([str(run / "model.pt"), "--out", str(tmp_path / "art"), "--quiet"]) == 0
    engine = Engine.load(tmp_path / "art")
    assert (engine.dim, engine.num_members) == (dim, config.num_masks)
    log_likelihood = engine.mixture(
        engine.member_log_probs(splits["test_data"][:3].astype(np.float32))
    )
    assert log_likelihood.shape == (3,) and np.all(log_likelihood < 0)
