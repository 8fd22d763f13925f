"""The artifact contract between trainer and service: ``model.onnx`` plus ``manifest.json``.

This module is the one definition of the manifest schema and of the ONNX graph's names; it imports
neither torch nor onnxruntime so both sides can use it.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.contract.masks import OrderingMode
from service.contract.mixture import Combination
from service.contract.schema import Dimension, Schema

# Version 1: every dimension is a Bernoulli (no ``dimensions``). Version 2: ``dimensions`` gives
# each dimension's family. Binary models are still written as version 1, so their artifacts and
# answers stay as they were.
SCHEMA_VERSION = 2
BINARY_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
WEIGHTS_SUM_TOLERANCE = 1e-6

# ONNX graph names.
INPUT_X = "x"  # [B, D] float32 in {0, 1}
OUTPUT_LOG_PROB = "log_prob"  # [B, K] float32, log p_k(x) in nats
OUTPUT_LOGITS = "logits"  # [B, K, D] float32, logit of p_k(x_d = 1 | x_<d)
OUTPUT_PARAMS = "params"  # [B, K, U] float32, every dimension's output units (schema models)
INIT_INPUT_DEGREES = "input_degrees"  # [K, D] int64
INIT_HIDDEN_DEGREES = "hidden_degrees_{layer}"  # [K, H_l] int64
INIT_WEIGHT = "weight_{layer}"  # [out, in] float32; the last layer is the output layer
INIT_BIAS = "bias_{layer}"  # [out] float32
INIT_DIRECT = "direct_weight"  # [D, D] float32, present with direct connections


class ArtifactError(Exception):
    """An artifact directory that cannot be served; the message names the problem."""


class _Strict(BaseModel):
    """No unknown fields, and every float finite: NaN or infinity is never a valid number here."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Nats per example: never negative for discrete data (checked by the manifest, which knows the
# schema); a density model's can be, where its density exceeds 1.
Nll = float


class Member(_Strict):
    ordering: list[int] = Field(description="Dimension at each position of this member's ordering.")
    ordering_kind: Literal["natural", "random"]


class SplitMetrics(_Strict):
    """Negative log-likelihoods in nats per example on one split."""

    members: list[Nll]
    uniform_mixture: Nll
    em_mixture: Nll
    shipped_mixture: Nll


class DataInfo(_Strict):
    source: str
    location: str | None = None
    binarization: str
    split_sizes: dict[str, int]


class OnnxInfo(_Strict):
    file: str = ONNX_FILE
    sha256: str
    opset: int = Field(ge=1)
    num_bytes: int = Field(ge=1)


class ProductNormaliser(_Strict):
    """log Z of the product of experts, sum_k w_k log p_k(x) - log Z, estimated at export by
    importance sampling from the mixture (``model.normaliser``); nats."""

    log_z: float
    standard_error: float = Field(ge=0, description="Of the log Z estimate (delta method).")
    upper_bound: float = Field(
        le=0, description="One-sided upper confidence bound on log Z (empirical Bernstein)."
    )
    confidence: float = Field(gt=0, lt=1)
    num_samples: int = Field(ge=0, description="Mixture draws; 0 when Z = 1 exactly (K = 1).")
    effective_sample_size: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> "ProductNormaliser":
        if self.log_z > self.upper_bound:
            raise ValueError(f"log_z {self.log_z} exceeds its upper_bound {self.upper_bound}")
        return self


# What a p-value ranks rows by (service.contract.conformal); both are low for unusual rows.
Score = Literal["log_likelihood", "complexity_corrected"]


class Calibration(_Strict):
    """Held-out rows' scores, for conformal p-values: rows the trainer set aside from the
    validation split before training, so they were used neither to train, to stop early, nor to
    fit the mixture weights."""

    split: Literal["valid"] = "valid"
    rows: list[Annotated[int, Field(ge=0)]] = Field(
        description="Indices of the calibration rows in the source's validation split."
    )
    seed: int = Field(description="Of the seeded shuffle that chose them.")
    compressor: str = Field(description="What measured L(x) for the complexity-corrected score.")
    scores: dict[Combination, dict[Score, list[float]]] = Field(
        description="Per combination and score, the rows' values in ascending order."
    )

    @model_validator(mode="after")
    def _sorted(self) -> "Calibration":
        if not self.rows:
            raise ValueError("calibration.rows: at least one row is required")
        if "mixture" not in self.scores:
            raise ValueError("calibration.scores: the mixture's scores are required")
        for combination, by_score in self.scores.items():
            for score, values in by_score.items():
                where = f"calibration.scores.{combination}.{score}"
                if len(values) != len(self.rows):
                    raise ValueError(f"{where}: {len(values)} values for {len(self.rows)} rows")
                if any(b < a for a, b in pairwise(values)):
                    raise ValueError(f"{where}: values must be in ascending order")
        return self


class Manifest(_Strict):
    schema_version: int = BINARY_SCHEMA_VERSION
    name: str
    package_version: str
    created_at: datetime
    dim: int = Field(ge=2)
    dimensions: list[Dimension] | None = Field(
        default=None,
        description="Each dimension's family (schema version 2); absent: every one is 0/1.",
    )
    image_shape: tuple[int, int] | None = None
    hidden_sizes: list[Annotated[int, Field(ge=1)]]
    direct_connections: bool
    ordering_mode: OrderingMode
    members: list[Member]
    mixture_weights: list[Annotated[float, Field(ge=0)]]
    weights_kind: Literal["uniform", "em"]
    em_alpha: float = Field(ge=0)
    pruned_members: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, description="Indices in the trained pool of the members kept by pruning."
    )
    product_normaliser: ProductNormaliser | None = Field(
        default=None, description="Present when export estimated it (made-export --product)."
    )
    calibration: Calibration | None = Field(
        default=None, description="Present when the trainer held out calibration rows."
    )
    data: DataInfo
    metrics: dict[Literal["valid", "test"], SplitMetrics]
    training: dict[str, object] = Field(default_factory=dict)
    onnx: OnnxInfo

    @property
    def num_members(self) -> int:
        return len(self.members)

    def schema(self) -> Schema | None:
        """The dimensions' schema; None for a binary (version 1) model."""
        return None if self.dimensions is None else Schema(self.dimensions)

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.schema_version not in (BINARY_SCHEMA_VERSION, SCHEMA_VERSION):
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this build reads "
                f"{BINARY_SCHEMA_VERSION} and {SCHEMA_VERSION})"
            )
        if (self.schema_version == SCHEMA_VERSION) != (self.dimensions is not None):
            raise ValueError(
                "dimensions: schema_version 2 needs dimensions, version 1 has none"
                if self.dimensions is None
                else "dimensions: only schema_version 2 has dimensions"
            )
        if self.dimensions is not None and len(self.dimensions) != self.dim:
            raise ValueError(f"dimensions has {len(self.dimensions)} entries for D={self.dim}")
        if not self.members:
            raise ValueError("members: at least one member is required")
        natural = list(range(self.dim))
        for k, member in enumerate(self.members):
            if sorted(member.ordering) != natural:
                raise ValueError(f"members[{k}].ordering is not a permutation of 0..{self.dim - 1}")
            if member.ordering_kind == "natural" and member.ordering != natural:
                raise ValueError(f"members[{k}].ordering_kind is natural but its ordering is not")
        counts = {"mixture_weights": len(self.mixture_weights)}
        counts |= {f"metrics.{split}.members": len(m.members) for split, m in self.metrics.items()}
        if self.pruned_members is not None:
            counts["pruned_members"] = len(self.pruned_members)
            if len(set(self.pruned_members)) != len(self.pruned_members):
                raise ValueError("pruned_members repeats a member")
        for field, count in counts.items():
            if count != self.num_members:
                raise ValueError(f"{field} has {count} entries for {self.num_members} members")
        total = math.fsum(self.mixture_weights)
        if abs(total - 1) > WEIGHTS_SUM_TOLERANCE:
            raise ValueError(f"mixture_weights sum to {total!r}; they must sum to 1")
        uniform = 1 / self.num_members
        if self.weights_kind == "uniform" and any(
            abs(w - uniform) > WEIGHTS_SUM_TOLERANCE for w in self.mixture_weights
        ):
            raise ValueError(f"mixture_weights are not uniform (1/{self.num_members} each)")
        if self.image_shape and self.image_shape[0] * self.image_shape[1] != self.dim:
            raise ValueError(f"image_shape {self.image_shape} does not hold D={self.dim} pixels")
        schema = self.schema()
        if schema is None or not schema.has_continuous:
            for split, metrics in self.metrics.items():
                nlls = {f"members.{k}": v for k, v in enumerate(metrics.members)}
                nlls |= metrics.model_dump(exclude={"members"})
                for field, value in nlls.items():
                    if value < 0:
                        raise ValueError(
                            f"metrics.{split}.{field}: {value} is negative, which the NLL of "
                            "discrete data cannot be"
                        )
        calibration = self.calibration
        if calibration and "product" in calibration.scores and self.product_normaliser is None:
            raise ValueError("calibration.scores.product needs the product_normaliser it used")
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
        raw = json.loads(path.read_text(), parse_constant=NotFinite, parse_float=_finite_float)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if (found := _first_not_finite(raw)) is not None:
        where, number = found
        raise ArtifactError(f"{path} is invalid: {where}: {number.literal} is not a finite number")
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema_version {version}, newer than this build reads ({SCHEMA_VERSION}); "
            "upgrade made-serve"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path} is invalid: {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """One line naming each invalid field: ``mixture_weights.0: Input should be ...``."""
    parts = []
    for error in exc.errors():
        where = ".".join(map(str, error["loc"]))
        message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


@dataclass(frozen=True)
class NotFinite:
    """A number of the manifest's text that is no finite float: NaN, Infinity (which Python's
    json reads although JSON has no such numbers) or one past float range such as 1e999."""

    literal: str


def _finite_float(literal: str) -> float | NotFinite:
    value = float(literal)
    return value if math.isfinite(value) else NotFinite(literal)


def _first_not_finite(value: object, where: str = "") -> tuple[str, NotFinite] | None:
    """The dotted path and literal of the first NotFinite in parsed JSON, if any."""
    if isinstance(value, NotFinite):
        return where, value
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_not_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


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
    if path.stat().st_size != manifest.onnx.num_bytes:
        raise ArtifactError(
            f"{path} has {path.stat().st_size} bytes; the manifest says onnx.num_bytes "
            f"{manifest.onnx.num_bytes}"
        )
    return path
