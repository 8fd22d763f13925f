"""Session fixtures: tiny artifacts trained in seconds, so the math can be checked exactly."""

from pathlib import Path

import numpy as np
import pytest

TINY_DIM = 8


def correlated_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """Binary rows with real structure (a noisy Markov chain), so models have something to learn."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, dim), dtype=np.float32)
    rows[:, 0] = rng.random(n) < 0.3
    for d in range(1, dim):
        flip = rng.random(n) < 0.2
        rows[:, d] = np.where(flip, 1 - rows[:, d - 1], rows[:, d - 1])
    return rows


def write_splits(folder: Path, dim: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "valid", "test")):
        np.save(
            folder / f"{split}.npy",
            correlated_rows(600 if split == "train" else 200, dim, seed + i),
        )
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_splits(tmp_path_factory.mktemp("tiny-data"), TINY_DIM)


def train_tiny(out: Path, data_dir: Path, **overrides: object):
    from model.config import TrainConfig
    from model.train import Trainer

    settings = dict(
        source="files",
        data_dir=str(data_dir),
        hidden_sizes=[16, 16],
        num_masks=4,
        epochs=8,
        batch_size=50,
        learning_rate=1e-2,
        direct=True,
        seed=0,
    )
    settings.update(overrides)
    return Trainer(TrainConfig(**settings), out, progress=False).fit()


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path):
    return train_tiny(tmp_path_factory.mktemp("tiny-run"), tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_trained) -> Path:
    from model.export import export

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    export(tiny_trained, out)
    return out
