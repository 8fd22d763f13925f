"""Request and response bodies of the /v1 API.

``inputs`` is typed ``Any`` for pydantic and decoded by ``service.codec`` straight into numpy; its
documented schema is given explicitly so OpenAPI still shows rows of 0, 1 or null.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, WithJsonSchema

from service.artifact import ProductNormaliser

_ENTRY = {"anyOf": [{"type": "integer", "enum": [0, 1]}, {"type": "null"}]}
_ROW = {
    "anyOf": [
        {"type": "array", "items": _ENTRY, "description": "D values"},
        {"type": "array", "items": {"type": "array", "items": _ENTRY}, "description": "[H][W]"},
    ]
}
Rows = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "array",
            "minItems": 1,
            "items": _ROW,
            "description": "Rows of length D (or image-shaped [H][W]) with entries 0 or 1; "
            "null marks a missing entry where the endpoint allows it.",
        }
    ),
]
Seed = Annotated[StrictInt, Field(ge=0, le=2**63 - 1, description="Same seed, same output.")]
Format = Literal["json", "png"]
Combination = Literal["mixture", "product"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogLikelihoodRequest(_Request):
    inputs: Rows
    per_member: StrictBool = Field(False, description="Also return each member's log p_k(x).")
    per_dimension: StrictBool = Field(
        False, description="Also return each member's terms log p_k(x_d | x_<d), by dimension."
    )
    num_particles: Annotated[StrictInt, Field(ge=2)] | None = Field(
        None, description="Importance-sampling particles for rows with null entries."
    )
    seed: Seed | None = None
    combination: Combination = Field(
        "mixture",
        description="mixture: the density that sampling and completion use. product: the "
        "normalised product of experts (complete rows only; log Z estimated at export).",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": [[0, 1, 1, 0]], "per_member": True}]},
    )


class CompleteRequest(_Request):
    inputs: Rows
    num_samples: Annotated[StrictInt, Field(ge=1)] = Field(1, description="Completions per row.")
    num_particles: Annotated[StrictInt, Field(ge=2)] | None = None
    seed: Seed | None = None
    format: Format = Field("json", description="png: a grid image (image models only).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": [[1, 0, None, None]], "num_samples": 4}]},
    )


class SampleRequest(_Request):
    num_samples: Annotated[StrictInt, Field(ge=1)] = 1
    seed: Seed | None = None
    format: Format = "json"

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"num_samples": 4, "seed": 0}]}
    )


Method = Literal["exact", "importance"]


class LogLikelihoodResponse(BaseModel):
    log_likelihood: list[float] = Field(description="log p(x) in nats (of the observed entries).")
    bits_per_dim: list[float] = Field(description="-log2 p(x) / number of observed entries.")
    method: list[Method]
    standard_error: list[float] = Field(description="Of the log estimate, nats; 0 if exact.")
    effective_sample_size: list[float | None]
    seed: int | None = None
    per_member: list[list[float]] | None = None
    per_dimension: list[list[list[float]]] | None = None
    combination: Combination = "mixture"
    product_normaliser: ProductNormaliser | None = Field(
        None, description="With combination=product: the log Z used and its uncertainty."
    )


class CompleteResponse(BaseModel):
    completions: list[list[list[int]]] = Field(description="[rows][num_samples][D].")
    method: list[Method]
    effective_sample_size: list[float | None]
    seed: int


class SampleResponse(BaseModel):
    samples: list[list[int]] = Field(description="[num_samples][D].")
    seed: int


class ModelInfo(BaseModel):
    name: str
    dim: int
    # A list in the schema: OpenAPI 3.1 has no tuple ``items``; the JSON is the same [H, W].
    image_shape: Annotated[list[int], Field(min_length=2, max_length=2)] | None
    num_members: int
    mixture_weights: list[float]
    weights_kind: str
    orderings_digest: str
    ordering_kinds: list[str]
    hidden_sizes: list[int]
    data_source: str
    binarization: str
    valid_nll: float
    test_nll: float
    test_bits_per_dim: float
    artifact_sha256: str
    created_at: str
    versions: dict[str, str]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    detail: list[ErrorItem]


class ErrorBody(BaseModel):
    detail: str
