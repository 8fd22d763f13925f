"""Loaded model versions: which ones a server loads at start, and reading one into memory."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.contract.artifact import ArtifactError
from service.inference.engine import Engine
from service.inference.limits import BatchLimits, limits_of, server_limits
from service.inference.memory import release_free_heap
from service.inference.repository import (
    ArtifactVersion,
    Repository,
    content_version,
    version_label,
)
from service.settings import Settings


@dataclass(eq=False)  # a version in memory is itself, whatever its fields
class LoadedModel:
    name: str
    version: str
    directory: Path
    engine: Engine
    limits: BatchLimits  # its batcher's: limits.json over the server's MADE_* values
    number: int | None = None  # the version folder's number; None when unversioned
    last_used: float = field(default_factory=time.monotonic)


def latest_first(model: LoadedModel) -> int:
    """The highest version number answers when a request names none (an unversioned artifact is
    its model's only version)."""
    return model.number if model.number is not None else -1


def warm_up(engine: Engine, max_batch_size: int) -> None:
    """Run every code path once so the first request does not pay for lazy initialisation."""
    rng = np.random.default_rng(0)
    rows = (rng.random((max_batch_size, engine.dim)) < 0.5).astype(np.float32)
    engine.member_log_probs(rows[:1])
    engine.member_log_probs(rows)
    engine.log_likelihood(rows[:2], per_dimension=True)
    engine.sample(2, rng)
    release_free_heap()


def read_model(wanted: ArtifactVersion, threads: int, settings: Settings) -> LoadedModel:
    """Load, validate (as ``Engine.load`` does, and its limits.json) and warm up one version;
    blocking."""
    limits = limits_of(wanted, settings)
    engine = Engine.load(wanted.directory, threads)
    warm_up(engine, limits.max_batch_size)
    version = version_label(wanted.number, engine.manifest)
    return LoadedModel(wanted.name, version, wanted.directory, engine, limits, wanted.number)


def repository_of(settings: Settings) -> Repository:
    """MADE_MODEL_REPOSITORY's folder, or ``--model``'s artifact as a repository of one."""
    if settings.model_repository is not None:
        return Repository(root=settings.model_repository)
    return Repository.of_artifact(settings.model_dir)


def startup_versions(repository: Repository, settings: Settings) -> list[ArtifactVersion]:
    """The latest version of each model to load at start (ArtifactError naming the problem)."""
    names = repository.names()
    if not names:
        raise ArtifactError(f"model repository {repository.root} holds no model folders")
    wanted = settings.startup_models if settings.startup_models is not None else names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ArtifactError(
            f"MADE_STARTUP_MODELS names {', '.join(unknown)}, which the repository does not "
            f"hold (it holds {', '.join(names)})"
        )
    budget = settings.max_loaded_models
    if budget is not None and len(wanted) > budget:
        raise ArtifactError(
            f"{len(wanted)} models to load at start but MADE_MAX_LOADED_MODELS={budget}; name "
            "the ones to load with MADE_STARTUP_MODELS"
        )
    default = settings.default_model
    if default is not None and default not in names:
        raise ArtifactError(f"MADE_DEFAULT_MODEL {default!r} is not in the repository")
    return [repository.version(name) for name in wanted]


def session_threads(settings: Settings, startup: int) -> int:
    """Intra-op threads per session: the process's share for each model it may hold at once."""
    return settings.threads_per_model(settings.max_loaded_models or startup)


@dataclass(frozen=True)
class Startup:
    """What a server loads before it is ready: the repository, its startup models, read and
    warmed up, and each session's share of the threads."""

    repository: Repository
    models: list[LoadedModel]
    threads: int


def prepare_startup(settings: Settings) -> Startup:
    """Read the repository and load its startup models; ArtifactError names what is unsound."""
    repository = repository_of(settings)
    wanted = startup_versions(repository, settings)
    threads = session_threads(settings, len(wanted))
    models = [read_model(version, threads, settings) for version in wanted]
    return Startup(repository, models, threads)


def startup_of_engine(settings: Settings, engine: Engine) -> Startup:
    """An engine already loaded (tests) served as ``--model`` would serve it."""
    warm_up(engine, settings.max_batch_size)
    name = engine.manifest.name
    version = content_version(engine.manifest)
    model = LoadedModel(name, version, settings.model_dir, engine, server_limits(settings))
    return Startup(Repository(folders={name: settings.model_dir}), [model], settings.onnx_threads())
