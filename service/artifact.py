"""The artifact contract between trainer and service: ``model.onnx`` plus ``manifest.json``.

This module is the one definition of the manifest schema and of the ONNX graph's names; it imports
neither torch nor onnxruntime so both sides can use it.
"""

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"

# ONNX graph names.
INPUT_X = "x"  # [B, D] float32 in {0, 1}
OUTPUT_LOG_PROB = "log_prob"  # [B, K] float32, log p_k(x) in nats
OUTPUT_LOGITS = "logits"  # [B, K, D] float32, logit of p_k(x_d = 1 | x_<d)
INIT_INPUT_DEGREES = "input_degrees"  # [K, D] int64
INIT_HIDDEN_DEGREES = "hidden_degrees_{layer}"  # [K, H_l] int64
INIT_WEIGHT = "weight_{layer}"  # [out, in] float32; the last layer is the output layer
INIT_BIAS = "bias_{layer}"  # [out] float32
INIT_DIRECT = "direct_weight"  # [D, D] float32, present with direct connections


class ArtifactError(Exception):
    """An artifact directory that cannot be served; the message names the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(_Strict):
    ordering: list[int] = Field(description="Dimension at each position of this member's ordering.")
    ordering_kind: Literal["natural", "random"]


class SplitMetrics(_Strict):
    """Negative log-likelihoods in nats per example on one split."""

    members: list[float]
    uniform_mixture: float
    em_mixture: float
    shipped_mixture: float


class DataInfo(_Strict):
    source: str
    location: str | None = None
    binarization: str
    split_sizes: dict[str, int]


class OnnxInfo(_Strict):
    file: str = ONNX_FILE
    sha256: str
    opset: int
    num_bytes: int


class ProductNormaliser(_Strict):
    """log Z of the product of experts, sum_k w_k log p_k(x) - log Z, estimated at export by
    importance sampling from the mixture (``service.poe``); nats."""

    log_z: float
    standard_error: float = Field(ge=0, description="Of the log Z estimate (delta method).")
    upper_bound: float = Field(
        le=0, description="One-sided upper confidence bound on log Z (empirical Bernstein)."
    )
    confidence: float = Field(gt=0, lt=1)
    num_samples: int = Field(ge=0, description="Mixture draws; 0 when Z = 1 exactly (K = 1).")
    effective_sample_size: float | None = None


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str
    package_version: str
    created_at: datetime
    dim: int = Field(ge=2)
    image_shape: tuple[int, int] | None = None
    hidden_sizes: list[int]
    direct_connections: bool
    ordering_mode: Literal["random", "natural", "natural-first"]
    members: list[Member]
    mixture_weights: list[float]
    weights_kind: Literal["uniform", "em"]
    em_alpha: float
    pruned_members: list[int] | None = Field(
        default=None, description="Indices in the trained pool of the members kept by pruning."
    )
    product_normaliser: ProductNormaliser | None = Field(
        default=None, description="Present when export estimated it (made-export --product)."
    )
    data: DataInfo
    metrics: dict[Literal["valid", "test"], SplitMetrics]
    training: dict[str, object] = Field(default_factory=dict)
    onnx: OnnxInfo

    @property
    def num_members(self) -> int:
        return len(self.members)

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this build reads "
                f"{SCHEMA_VERSION})"
            )
        if not self.members:
            raise ValueError("members: at least one member is required")
        for k, member in enumerate(self.members):
            if sorted(member.ordering) != list(range(self.dim)):
                raise ValueError(f"members[{k}].ordering is not a permutation of 0..{self.dim - 1}")
        if len(self.mixture_weights) != self.num_members:
            raise ValueError(
                f"mixture_weights has {len(self.mixture_weights)} entries for "
                f"{self.num_members} members"
            )
        if any(w < 0 for w in self.mixture_weights) or abs(sum(self.mixture_weights) - 1) > 1e-6:
            raise ValueError("mixture_weights must be non-negative and sum to 1")
        if self.image_shape and self.image_shape[0] * self.image_shape[1] != self.dim:
            raise ValueError(f"image_shape {self.image_shape} does not hold D={self.dim} pixels")
        return self


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    path = directory / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``manifest.json``; raise ArtifactError with one clear line otherwise."""
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema_version {version}, newer than this build reads ({SCHEMA_VERSION}); "
            "upgrade made-serve"
        )
    try:
        return Manifest.model_validate(raw)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise ArtifactError(
            f"{path} is invalid: {' '.join(line.strip() for line in first)}"
        ) from exc


def verify_onnx_file(directory: Path, manifest: Manifest) -> Path:
    """Check that model.onnx exists and matches the manifest's sha256."""
    path = directory / manifest.onnx.file
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    actual = sha256_of(path)
    if actual != manifest.onnx.sha256:
        raise ArtifactError(
            f"{path} sha256 {actual[:12]}... does not match manifest {manifest.onnx.sha256[:12]}..."
        )
    return path
