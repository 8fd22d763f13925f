"""Admin routes (API key only): hot reload of the default model."""

import json
import os
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from service.contract.artifact import ArtifactError, read_manifest
from service.inference.errors import InvalidField
from service.inference.repository import ArtifactVersion
from service.transport.app_state import serving_state
from service.transport.auth import require_admin_key
from service.transport.body import refuse_repeated_keys
from service.transport.errors import ArtifactRejected
from service.transport.routes.v1 import ERRORS
from service.transport.schemas import ErrorBody

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin_key)])


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str | None = Field(
        None,
        description="Artifact directory beside the served one (same parent folder); "
        "default: the configured MADE_MODEL_DIR again.",
    )


class ReloadResponse(BaseModel):
    name: str
    model_dir: str
    artifact_sha256: str
    previous_sha256: str


def artifact_dir(configured: Path, requested: str | None) -> Path:
    """The directory to load: only the configured one or a sibling, never an arbitrary path."""
    if requested is None:
        return configured
    if "\0" in requested:
        raise InvalidField(("model_dir",), "must not contain a NUL character")
    try:
        os.fsencode(requested)
    except UnicodeEncodeError:
        raise InvalidField(("model_dir",), "must be text the file system can encode") from None
    root = configured.resolve().parent
    candidate = (root / requested).resolve()
    if candidate.parent != root:
        raise InvalidField(("model_dir",), f"must be a directory beside {configured}")
    longest = os.pathconf(root, "PC_NAME_MAX")
    if len(os.fsencode(candidate.name)) > longest:
        raise InvalidField(("model_dir",), f"names a file longer than {longest} bytes")
    return candidate


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        400: ERRORS[400],
        401: {"model": ErrorBody, "description": "Missing or wrong API key."},
        403: {"model": ErrorBody, "description": "No MADE_API_KEY configured: admin is off."},
        409: {"model": ErrorBody, "description": "The new artifact is invalid; old one serves."},
        422: ERRORS[422],
        503: {"model": ErrorBody, "description": "Not ready yet; retry."},
    },
)
async def reload(request: Request, body: ReloadRequest) -> ReloadResponse:
    """Load and validate a new artifact beside the old one, then switch to it atomically.

    ``{}`` reloads the configured directory (in a model repository: the default model's latest
    version, as ``POST /v2/repository/models/{name}/load`` does). Requests in flight finish on
    the old model; an artifact that fails validation (files, sha256, schema with finite and
    consistent numbers, graph against manifest, float64 parity), the same as at start-up, is
    refused with 409 naming the problem and the old model keeps serving.
    """
    # FastAPI parsed the body keeping a repeated key's last value: every route refuses repeats.
    raw = await request.body()
    refuse_repeated_keys(raw, json.loads(raw))
    state = serving_state(request)
    previous = await state.model()
    try:
        if state.settings.model_repository is None:
            directory = artifact_dir(state.settings.model_dir, body.model_dir)
            # --model: the artifact's manifest names the model it replaces.
            wanted = ArtifactVersion(read_manifest(directory).name, directory, None)
        elif body.model_dir is not None:
            raise InvalidField(
                ("model_dir",),
                "a model repository's models load from their own folders: add a version folder "
                "and POST /v2/repository/models/{name}/load",
            )
        else:
            wanted = state.repository_version(previous.name, None)
        model = await state.load(wanted, replace=True, supersedes=previous.name)
    except ArtifactError as exc:
        raise ArtifactRejected(f"not reloaded, still serving the old model: {exc}") from None
    engine = model.engine
    return ReloadResponse(
        name=engine.manifest.name,
        model_dir=str(model.directory),
        artifact_sha256=engine.manifest.onnx.sha256,
        previous_sha256=previous.engine.manifest.onnx.sha256,
    )
