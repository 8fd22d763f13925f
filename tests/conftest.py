"""Session fixtures: tiny artifacts trained in seconds, so the math can be checked exactly."""

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import numpy as np
import pytest

if TYPE_CHECKING:
    from service.client import MadeClient

T = TypeVar("T")

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


def export_tiny(factory: pytest.TempPathFactory, name: str, dim: int, **overrides: object) -> Path:
    """Train a tiny model on correlated rows of width ``dim`` and export it as artifact ``name``."""
    from model.export import export

    data = write_splits(factory.mktemp(f"{name}-data"), dim)
    out = factory.mktemp("artifacts") / name
    export(train_tiny(factory.mktemp(f"{name}-run"), data, **overrides), out)
    return out


def write_schema_splits(
    folder: Path,
    rows_of: Callable[[int, int], np.ndarray],
    schema: dict,
    sizes: tuple[int, int] = (600, 200),
) -> Path:
    """A files source under a schema file: train/valid/test .npy of ``rows_of(n, seed)`` (seeds
    0, 1, 2; ``sizes`` the train and the other splits' rows) and ``schema.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, split in enumerate(("train", "valid", "test")):
        np.save(folder / f"{split}.npy", rows_of(sizes[0] if split == "train" else sizes[1], seed))
    (folder / "schema.json").write_text(json.dumps(schema))
    return folder


def export_schema_model(
    factory: pytest.TempPathFactory,
    name: str,
    data_dir: Path,
    product: bool = False,
    **overrides: object,
) -> Path:
    """Train a tiny model on a schema source (``write_schema_splits``) and export it as ``name``."""
    from model.export import export

    trained = train_tiny(factory.mktemp(f"{name}-run"), data_dir, **overrides)
    out = factory.mktemp("artifacts") / name
    export(trained, out, product=product)
    return out


@pytest.fixture(scope="session")
def natural_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """D=8, every member in the natural ordering: observed prefixes give exact completions."""
    return export_tiny(tmp_path_factory, "natural", TINY_DIM, ordering="natural")


@pytest.fixture(scope="session")
def wide_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """D=11, small enough to enumerate all 2^D rows over HTTP."""
    return export_tiny(tmp_path_factory, "wide", 11, epochs=3)


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 8x8 digits source briefly trained: an image model (D=64)."""
    from model.export import export

    out = tmp_path_factory.mktemp("artifacts") / "digits"
    run = tmp_path_factory.mktemp("digits-run")
    trained = train_tiny(run, run, source="digits", epochs=2)  # digits ignores the data folder
    export(trained, out)
    return out


def strict_json(text: str | bytes) -> object:
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"response contains {constant}")

    return json.loads(text, parse_constant=refuse)


@contextmanager
def served(artifact: Path, **settings: object) -> Iterator["MadeClient"]:
    """A MadeClient on an in-process app (lifespan run); every JSON response is parsed strictly."""
    from fastapi.testclient import TestClient

    from service.client import MadeClient
    from service.settings import Settings
    from service.transport.app import create_app

    def check(response: httpx.Response) -> None:
        if response.headers.get("content-type", "").startswith("application/json"):
            strict_json(response.read())

    with TestClient(create_app(Settings(model_dir=artifact, **settings))) as http:
        http.event_hooks["response"].append(check)
        yield MadeClient(client=http)


def run_async(coroutine: Coroutine[object, object, T]) -> T:
    """asyncio.run in a fresh thread: pytest-playwright keeps an event loop running in this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLIs configure logging on streams pytest captures and later closes; undo that per test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
