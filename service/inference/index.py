"""What the repository holds and what of it is loaded: one entry per model version."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.contract import artifact
from service.contract.artifact import ArtifactError, Manifest
from service.inference.limits import BatchLimits
from service.inference.models import LoadedModel
from service.inference.repository import version_label
from service.inference.state import ServingState

State = Literal["READY", "UNAVAILABLE"]  # the V2 repository extension's words


@dataclass(frozen=True)
class VersionStatus:
    name: str
    version: str
    state: State
    reason: str  # why it is unavailable; empty when it serves
    manifest: Manifest | None  # None when its manifest cannot be read
    limits: BatchLimits | None = None  # its batcher's, when loaded


def repository_index(state: ServingState) -> list[VersionStatus]:
    """Every version on disk, loaded ones READY; then anything loaded that left the disk."""
    entries: list[VersionStatus] = []
    listed: set[tuple[str, str]] = set()
    repository = state.repository
    for name in repository.names() if repository is not None else []:
        loaded = state.models.get(name, {})
        try:
            versions = repository.versions(name)
        except ArtifactError as exc:
            entries.append(VersionStatus(name, "", "UNAVAILABLE", str(exc), None))
            continue
        for version in versions:
            in_memory = next((m for m in loaded.values() if m.directory == version.directory), None)
            if in_memory is not None:
                entry = loaded_status(in_memory)
            else:
                entry = on_disk(name, version.number, version.directory)
            entries.append(entry)
            listed.add((entry.name, entry.version))
    for name, versions in state.models.items():
        for model in versions.values():
            if (name, model.version) not in listed:
                entries.append(loaded_status(model))
    return entries


def loaded_status(model: LoadedModel) -> VersionStatus:
    return VersionStatus(
        model.name, model.version, "READY", "", model.engine.manifest, model.limits
    )


def on_disk(name: str, number: int | None, directory: Path) -> VersionStatus:
    """A version not in memory: its manifest when readable, and why it does not serve."""
    try:
        manifest = artifact.read_manifest(directory)
    except ArtifactError as exc:
        return VersionStatus(
            name, str(number) if number is not None else "", "UNAVAILABLE", str(exc), None
        )
    return VersionStatus(
        name, version_label(number, manifest), "UNAVAILABLE", "not loaded", manifest
    )
