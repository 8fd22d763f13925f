"""Where the served models are on disk: Triton's repository layout, or the one ``--model`` folder.

A repository folder holds a folder per model name; a model folder holds either one artifact
(``manifest.json`` + ``model.onnx``) or numbered version folders (``1/``, ``2/``) that each hold
one. A numbered version is named by its number; an unversioned artifact by the first 12 hex digits
of its ONNX sha256, so the name changes exactly when the content does. The folders are read again
on every lookup: a version copied in is found by the next load, without a restart.
"""

from dataclasses import dataclass
from pathlib import Path

from service.contract import artifact
from service.contract.artifact import ArtifactError
from service.inference.errors import UnknownModel

SHA_VERSION_DIGITS = 12


@dataclass(frozen=True)
class ArtifactVersion:
    name: str  # the model's name
    directory: Path  # the artifact itself
    number: int | None  # the version folder's number; None for an unversioned artifact

    def label(self) -> str:
        """The version's name in routes and answers (reads the manifest when unversioned)."""
        if self.number is not None:
            return str(self.number)
        return content_version(artifact.read_manifest(self.directory))


def content_version(manifest: artifact.Manifest) -> str:
    return manifest.onnx.sha256[:SHA_VERSION_DIGITS]


def version_label(number: int | None, manifest: artifact.Manifest) -> str:
    """``ArtifactVersion.label`` for a version whose manifest is already read."""
    return str(number) if number is not None else content_version(manifest)


class Repository:
    """Model names -> their folders: every subfolder of ``root``, or the fixed ``folders``."""

    def __init__(self, root: Path | None = None, folders: dict[str, Path] | None = None):
        if (root is None) == (folders is None):
            raise ValueError("give a repository root or fixed model folders, not both")
        self.root = root
        self.fixed = dict(folders or {})

    @classmethod
    def of_artifact(cls, directory: Path) -> "Repository":
        """``--model DIR``: a repository of one model, named as its manifest names it."""
        return cls(folders={artifact.read_manifest(directory).name: directory})

    def folders(self) -> dict[str, Path]:
        """Every model's folder, as the disk holds them now, by name."""
        if self.root is None:
            return dict(self.fixed)
        if not self.root.is_dir():
            raise ArtifactError(f"model repository {self.root} is not a directory")
        return {
            path.name: path
            for path in sorted(self.root.iterdir())
            if path.is_dir() and not path.name.startswith(".")
        }

    def names(self) -> list[str]:
        return list(self.folders())

    def folder(self, name: str) -> Path:
        """``name``'s folder (UnknownModel naming the models there are when there is none)."""
        folders = self.folders()
        if name not in folders:
            known = ", ".join(repr(n) for n in folders) or "none"
            raise UnknownModel(f"unknown model {name!r}; this server has {known}")
        return folders[name]

    def versions(self, name: str) -> list[ArtifactVersion]:
        """``name``'s versions, oldest first; an unversioned artifact is the only one."""
        folder = self.folder(name)
        if (folder / artifact.MANIFEST_FILE).exists() or self.root is None:
            return [ArtifactVersion(name, folder, None)]
        numbered = sorted(
            (int(path.name), path)
            for path in folder.iterdir()
            if path.is_dir() and path.name.isdigit() and path.name.isascii()
        )
        if not numbered:
            raise ArtifactError(
                f"{folder} holds neither an artifact ({artifact.MANIFEST_FILE}) nor numbered "
                "version folders (1/, 2/, ...)"
            )
        return [ArtifactVersion(name, path, number) for number, path in numbered]

    def version(self, name: str, version: str | None = None) -> ArtifactVersion:
        """The version a request names; the latest when it names none."""
        versions = self.versions(name)
        if version is None:
            return versions[-1]
        labelled = {}
        for candidate in versions:
            try:
                labelled[candidate.label()] = candidate
            except ArtifactError:  # an unreadable unversioned artifact has no content version
                continue
        if version in labelled:
            return labelled[version]
        raise UnknownModel(
            f"model {name!r} has no version {version!r}; "
            f"it has {', '.join(map(repr, labelled)) or 'none'}"
        )
