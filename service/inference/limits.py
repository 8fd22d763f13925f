"""A model's batching limits: the server's MADE_* values, overridden for one model by a
``limits.json`` in its folder (as Triton's per-model config overrides the server's).

Only the limits that depend on the model are per model: a batch's rows and wait, and the rows and
bytes its queue may hold (a model of D = 784 needs 12 times the bytes of one of D = 64 for the
same rows). The request timeout, body size and row counts of a request stay the server's: they
are what clients and orchestrators are configured against.
"""

import json
from pathlib import Path

from pydantic import ConfigDict, ValidationError, create_model

from service.contract.artifact import ArtifactError
from service.inference.repository import ArtifactVersion
from service.settings import Settings

LIMITS_FILE = "limits.json"
PER_MODEL = ("max_batch_size", "max_queue_delay_ms", "max_queue_rows", "max_queue_bytes")

# The same fields, bounds and descriptions as the Settings they override; unknown keys refused.
BatchLimits = create_model(
    "BatchLimits",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{
        name: (Settings.model_fields[name].annotation, Settings.model_fields[name])
        for name in PER_MODEL
    },
)


def server_limits(settings: Settings) -> BatchLimits:
    """The MADE_* values, for a model without a limits.json."""
    return BatchLimits(**{name: getattr(settings, name) for name in PER_MODEL})


def model_folder(version: ArtifactVersion) -> Path:
    """The folder a model's limits.json sits in: the one holding its numbered versions, or the
    unversioned artifact itself (``--model``'s folder)."""
    return version.directory.parent if version.number is not None else version.directory


def limits_of(version: ArtifactVersion, settings: Settings) -> BatchLimits:
    """``version``'s limits: its model's limits.json over the server's; ArtifactError names the
    file and each field that does not validate, so a load with a bad one changes nothing."""
    path = model_folder(version) / LIMITS_FILE
    if not path.is_file():
        return server_limits(settings)
    try:
        overrides = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise ArtifactError(f"{path} must hold an object of limits ({', '.join(PER_MODEL)})")
    try:
        return BatchLimits(**{**server_limits(settings).model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
        raise ArtifactError(f"{path}: {problems}") from exc
