"""Request and response bodies of the /v1 API.

``inputs`` is typed ``Any`` for pydantic and decoded by ``service.transport.codec`` straight into
numpy; its documented schema is given explicitly so OpenAPI still shows rows of 0, 1 or null.
"""

import copy
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    model_serializer,
)

from service.contract.artifact import Manifest, ProductNormaliser, Score
from service.contract.mixture import Combination, Method
from service.contract.schema import Dimension
from service.inference.limits import BatchLimits
from service.settings import Settings, counted_samples
from service.transport.columns import column_names, real_bounds

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


def _whole_number(value: object) -> object:
    """2.0 as the integer 2: JSON has one number type, and the OpenAPI 3.1 document's JSON Schema
    counts 2.0 an integer. 2.5, "2" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Integer options: an int, or a float with no fractional part; never a string or a boolean. The
# validator comes last so that the bounds stay in the JSON schema.
_WHOLE = BeforeValidator(_whole_number)
Seed = Annotated[
    StrictInt, Field(ge=0, le=2**63 - 1, description="Same seed, same output."), _WHOLE
]
Samples = Annotated[StrictInt, Field(ge=1), _WHOLE]
Particles = Annotated[StrictInt, Field(ge=2), _WHOLE]
Format = Literal["json", "png"]
Alpha = Annotated[StrictFloat, Field(gt=0, lt=1)]
Explain = Annotated[StrictInt, Field(ge=1), _WHOLE]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogLikelihoodRequest(_Request):
    inputs: Rows
    per_member: StrictBool = Field(False, description="Also return each member's log p_k(x).")
    per_dimension: StrictBool = Field(
        False, description="Also return each member's terms log p_k(x_d | x_<d), by dimension."
    )
    num_particles: Particles | None = Field(
        None, description="Importance-sampling particles for rows with null entries."
    )
    seed: Seed | None = None
    combination: Combination = Field(
        "mixture",
        description="mixture: the density that sampling and completion use. product: the "
        "normalised product of experts (complete rows only; log Z estimated at export).",
    )
    p_value: StrictBool = Field(
        False,
        description="Also return each row's conformal p-value against the artifact's held-out "
        "calibration rows (complete rows only): at most a fraction alpha of normal rows get "
        "p <= alpha.",
    )
    alpha: Alpha | None = Field(
        None,
        description="Also flag rows with p <= alpha as anomalous (implies p_value); default "
        "MADE_ANOMALY_ALPHA when that is set.",
    )
    score: Score | None = Field(
        None,
        description="What the p-value ranks rows by (implies p_value): log_likelihood (default) "
        "or complexity_corrected, -log p(x) minus the row's compressed length L(x) (Serra et al. "
        "2020), for inputs simpler than the data.",
    )
    explain: Explain | None = Field(
        None,
        description="Also return this many dimensions with the largest surprise "
        "-log p(x_d | x_<d), under the member with the highest posterior weight for the row.",
    )


class CompleteRequest(_Request):
    inputs: Rows
    num_samples: Samples = Field(1, description="Completions per row.")
    num_particles: Particles | None = Field(
        None,
        description="Importance-sampling particles a row's set starts from; it grows (up to "
        "MADE_MAX_PARTICLES) until its effective sample size reaches num_samples.",
    )
    seed: Seed | None = None
    format: Format = Field("json", description="png: a grid image (image models only).")
    labels: StrictBool = Field(
        False,
        description="Give a labelled categorical dimension's values as its labels (schema "
        "models with labels; JSON only).",
    )


class SampleRequest(_Request):
    num_samples: Samples = 1
    seed: Seed | None = None
    format: Format = "json"
    labels: StrictBool = Field(
        False,
        description="Give a labelled categorical dimension's values as its labels (schema "
        "models with labels; JSON only).",
    )


class SurpriseItem(BaseModel):
    index: int = Field(description="The dimension.")
    pixel: Annotated[list[int], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[row, column] in the image, for image models."
    )
    value: int | float = Field(description="The row's value there.")
    surprise: float = Field(description="-log p_k(x_d | x_<d) in nats.")


class LogLikelihoodResponse(BaseModel):
    log_likelihood: list[float] = Field(description="log p(x) in nats (of the observed entries).")
    bits_per_dim: list[float] | None = Field(
        None,
        description="-log2 p(x) / number of observed entries. Absent for a model with "
        "real-valued (gaussian_mixture) columns: its log_likelihood is a log density in the "
        "data's units, which bits per dimension do not measure.",
    )
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
    score: Score | None = Field(None, description="With p-values: what they rank rows by.")
    anomaly_score: list[float] | None = Field(
        None, description="With p-values: higher is more unusual; -log p(x), or S(x)."
    )
    p_value: list[float] | None = Field(None, description="Conformal, in (0, 1].")
    alpha: float | None = Field(None, description="The threshold that set anomalous.")
    anomalous: list[bool] | None = Field(None, description="p_value <= alpha.")
    explanation: list[list[SurpriseItem]] | None = Field(
        None, description="Per row, its most surprising dimensions, most surprising first."
    )


# A row as answered: D values (levels, labels when asked, real values as numbers), or for a
# tabular model (real-valued columns, every column named) an object keyed by column name.
AnsweredRow = list[int | float | str] | dict[str, int | float | str]
TABLE_ROWS = (
    " A tabular model's rows (some column real-valued, every column named) are objects keyed "
    "by column name: a labelled categorical as its label, real values as numbers."
)


class CompleteResponse(BaseModel):
    completions: list[list[AnsweredRow]] = Field(
        description="[rows][num_samples][D]; labels for labelled dimensions when asked."
        + TABLE_ROWS
    )
    method: list[Method]
    effective_sample_size: list[float | None] = Field(
        description="Per row, of the importance particle set the completions were resampled "
        "from (null if exact). The set grows until this reaches num_samples, so the completions "
        "are as accurate as num_samples independent draws, unless particles_capped."
    )
    particles_capped: list[bool] = Field(
        description="Per row: the particle set reached MADE_MAX_PARTICLES with its effective "
        "sample size still below num_samples, so the completions repeat more than independent "
        "draws would."
    )
    warning: str | None = Field(
        description="Names the capped rows and what helps; null when no row is capped."
    )
    seed: int
    probabilities: list[dict[str, dict[str, float]]] | None = Field(
        None,
        description="Tabular models: per row, for each categorical column it lacks, {class "
        "(label, or index as text): estimated p(class | observed entries)}, the average over "
        "the row's completions of the class's exact conditional given the completion's other "
        "entries (an estimate, as good as the completions: see effective_sample_size).",
    )


class SampleResponse(BaseModel):
    samples: list[AnsweredRow] = Field(
        description="[num_samples][D]; labels for labelled dimensions when asked." + TABLE_ROWS
    )
    seed: int


class ModelInfo(BaseModel):
    name: str = Field(description="The artifact's own name (its manifest's).")
    model: str = Field(description="The name routes use: /v1/models/{model}/...")
    version: str = Field(
        description="The version served: its folder's number, or for an unversioned artifact "
        "the first 12 hex digits of its sha256."
    )
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
    test_bits_per_dim: float | None = Field(
        description="test_nll / (D log 2); null for a model with real-valued (gaussian_mixture) "
        "columns: its test NLL is a density's, in the data's units, which bits per dimension do "
        "not measure."
    )
    artifact_sha256: str
    created_at: str
    versions: dict[str, str]
    calibration_rows: int | None = Field(
        None, description="Held-out rows the p-values rank against; null: p-values refused."
    )
    dimensions: list[Dimension] | None = Field(
        None,
        description="Each dimension's family and levels (schema models); absent for a model "
        "of 0/1 dimensions.",
    )

    @model_serializer(mode="wrap")
    def _binary_answers_as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        """A binary model's answer stays as it was before schemas: no ``dimensions`` key."""
        data = handler(self)
        if data.get("dimensions") is None:
            data.pop("dimensions", None)
        return data


class ModelVersionEntry(BaseModel):
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str = Field(description="Why it does not serve; empty when it does.")
    dim: int | None = Field(description="null when its manifest cannot be read.")
    num_members: int | None
    image_shape: Annotated[list[int], Field(min_length=2, max_length=2)] | None
    artifact_sha256: str | None
    limits: BatchLimits | None = Field(
        None,
        description="Its batcher's limits when loaded: the model folder's limits.json over the "
        "server's MADE_MAX_BATCH_SIZE, MADE_MAX_QUEUE_DELAY_MS, MADE_MAX_QUEUE_ROWS and "
        "MADE_MAX_QUEUE_BYTES; null when not loaded.",
    )


class ModelEntry(BaseModel):
    name: str
    default: bool = Field(description="The plain /v1 routes answer for it.")
    versions: list[ModelVersionEntry]


class ModelList(BaseModel):
    models: list[ModelEntry]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    detail: list[ErrorItem]


class ErrorBody(BaseModel):
    detail: str


# -- The document served at /openapi.json ----------------------------------------------------------
# The bodies above are what pydantic checks whatever the model. What a request may hold also
# depends on the served model (D, image shape, a product normaliser), the limits and the API key;
# the served document states all of it, so that a request valid under it is one the service
# accepts, and one invalid under it is refused.

_BIT = {"type": "integer", "enum": [0, 1]}
_BIT_OR_NULL = {"anyOf": [_BIT, {"type": "null"}]}
_SEED_MAX = 2**63 - 1


def _exactly(items: dict, length: int) -> dict:
    return {"type": "array", "items": items, "minItems": length, "maxItems": length}


def _rows(manifest: Manifest, entry: dict, max_rows: int) -> dict:
    """1 to ``max_rows`` rows, all of D entries or (image models) all [H][W]."""
    nulls = ", or null for a missing entry" if entry is _BIT_OR_NULL else ""
    if manifest.dimensions is not None:
        return _level_rows(manifest, entry is _BIT_OR_NULL, max_rows) | {
            "description": f"1 to {max_rows} rows, each of {manifest.dim} values; entry d is "
            "one of dimension d's levels, or a number for a real-valued one (GET /v1/model: "
            f"dimensions); a model whose dimensions are all named also takes a row as an object "
            f"keyed by column name{nulls}."
        }
    shapes, shape = [_exactly(entry, manifest.dim)], f"{manifest.dim} values"
    if manifest.image_shape is not None:
        height, width = manifest.image_shape
        shapes.append(_exactly(_exactly(entry, width), height))
        shape += f", or all {height} rows of {width}"
    forms = [{"type": "array", "minItems": 1, "maxItems": max_rows, "items": row} for row in shapes]
    schema = {"anyOf": forms} if len(forms) > 1 else forms[0]
    return schema | {
        "description": f"1 to {max_rows} rows, each of {shape}; entries 0 or 1{nulls}."
    }


def _level_rows(manifest: Manifest, nullable: bool, max_rows: int) -> dict:
    """A schema model's flat rows, entry by entry: an integer level, a label, or a real value
    within its range; for a model whose dimensions are all named, or an object keyed by them."""
    schema = manifest.schema()
    entries = []
    for d, dimension in enumerate(manifest.dimensions or []):
        if schema is not None and schema.continuous[d]:
            low, high = real_bounds(schema)
            level: dict = {"type": "number", "minimum": float(low[d]), "maximum": float(high[d])}
        else:
            level = {"type": "integer", "minimum": 0, "maximum": dimension.levels - 1}
        labels = getattr(dimension, "labels", None)
        choices = [level, {"type": "string", "enum": labels}] if labels else [level]
        if nullable:
            choices.append({"type": "null"})
        entries.append(choices[0] if len(choices) == 1 else {"anyOf": choices})
    row: dict = {"type": "array", "prefixItems": entries, "items": False, "minItems": len(entries)}
    names = column_names(schema)
    if names is not None:
        record = {
            "type": "object",
            "properties": dict(zip(names, entries, strict=True)),
            "required": list(names),
            "additionalProperties": False,
            "description": "The row keyed by column name.",
        }
        row = {"anyOf": [row, record]}
    return {"type": "array", "minItems": 1, "maxItems": max_rows, "items": row}


def _optional_int(minimum: int, maximum: int, description: str) -> dict:
    bounded = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return {"anyOf": [bounded, {"type": "null"}], "description": description}


def _body(model: type[BaseModel], settings: Settings, **properties: dict) -> dict:
    """``model``'s schema with the limits in force and the given properties replaced."""
    schema = model.model_json_schema()
    fields = schema["properties"]
    if "num_particles" in fields:
        fields["num_particles"] = _optional_int(
            2, settings.max_particles, fields["num_particles"].get("description", "Particles.")
        )
    fields["seed"] = _optional_int(0, _SEED_MAX, "Same seed, same output.")
    fields.update(properties)
    return schema


def _formats(manifest: Manifest) -> dict:
    formats = ["json", "png"] if manifest.image_shape is not None else ["json"]
    return {
        "type": "string",
        "enum": formats,
        "default": "json",
        "description": "png: a grid image (image models only).",
    }


def _anomaly_options(manifest: Manifest, calibrated: bool) -> dict[str, dict]:
    """Complete rows take explanations; p-values also need calibration scores for the
    combination asked, and complexity_corrected needs discrete data."""
    explain = _optional_int(1, manifest.dim, "Also return this many most surprising dimensions.")
    schema = manifest.schema()
    if calibrated and schema is not None and schema.has_continuous:
        score = {
            "anyOf": [{"type": "string", "enum": ["log_likelihood"]}, {"type": "null"}],
            "description": "log_likelihood: complexity_corrected applies to discrete data only.",
        }
        return {"explain": explain, "score": score}
    if calibrated:
        return {"explain": explain}
    return {
        "p_value": {"const": False},
        "alpha": {"type": "null"},
        "score": {"type": "null"},
        "explain": explain,
    }


def log_likelihood_body(manifest: Manifest, settings: Settings) -> dict:
    """Complete rows take every option (p-values where the combination has calibration scores);
    rows with null take neither per-member nor per-dimension terms, nor the product (whose
    marginals are intractable), nor p-values and explanations."""
    combinations = ["mixture", "product"] if manifest.product_normaliser else ["mixture"]
    scored = manifest.calibration.scores if manifest.calibration else {}
    alternatives = []
    for calibrated in (True, False):
        chosen = [c for c in combinations if (c in scored) == calibrated]
        if not chosen:
            continue
        complete = _body(
            LogLikelihoodRequest,
            settings,
            inputs=_rows(manifest, _BIT, settings.max_rows),
            combination={"type": "string", "enum": chosen, "default": "mixture"},
            **_anomaly_options(manifest, calibrated),
        )
        complete["title"] = f"complete rows, {' or '.join(chosen)}" + (
            "" if calibrated else " (no p-values: no calibration scores)"
        )
        alternatives.append(complete)
    with_nulls = _body(
        LogLikelihoodRequest,
        settings,
        inputs=_rows(manifest, _BIT_OR_NULL, settings.max_rows),
        per_member={"const": False},
        per_dimension={"const": False},
        combination={"const": "mixture"},
        p_value={"const": False},
        alpha={"type": "null"},
        score={"type": "null"},
        explain={"type": "null"},
    )
    with_nulls["title"] = "rows with null entries"
    example = [d % 2 for d in range(manifest.dim)]
    return {
        "title": "LogLikelihoodRequest",
        "anyOf": [*alternatives, with_nulls],
        "examples": [{"inputs": [example], "per_member": True}],
    }


def sample_bands(max_samples: int, max_rows: int) -> list[tuple[int, int, int]]:
    """(lowest, highest num_samples, most rows) of a completion request, band by band."""
    bands: list[tuple[int, int, int]] = []
    low = 1
    while low <= max_samples:
        high = counted_samples(low, max_samples)
        rows = min(max_rows, max_samples // high)
        if bands and bands[-1][2] == rows:
            bands[-1] = (bands[-1][0], high, rows)
        else:
            bands.append((low, high, rows))
        low = high + 1
    return bands


def _labels(manifest: Manifest) -> dict:
    """labels: true only for a model with labelled dimensions."""
    if any(getattr(d, "labels", None) for d in manifest.dimensions or ()):
        return {"type": "boolean", "default": False}
    return {"const": False, "description": "This model has no labelled dimensions."}


def complete_body(manifest: Manifest, settings: Settings) -> dict:
    """One alternative per band of num_samples, each with its own row limit."""
    bands = []
    for low, high, rows in sample_bands(settings.max_samples, settings.max_rows):
        band = _body(
            CompleteRequest,
            settings,
            inputs=_rows(manifest, _BIT_OR_NULL, rows),
            num_samples={"type": "integer", "minimum": low, "maximum": high, "default": 1},
            format=_formats(manifest),
            labels=_labels(manifest),
        )
        band["title"] = f"num_samples {low}-{high}: up to {rows} rows"
        bands.append(band)
    half = manifest.dim // 2
    example = [d % 2 for d in range(half)] + [None] * (manifest.dim - half)
    return {
        "title": "CompleteRequest",
        "description": f"num_samples x rows is at most {settings.max_samples} "
        "(MADE_MAX_SAMPLES), with num_samples counted as its next power of two.",
        "anyOf": bands,
        "examples": [{"inputs": [example], "num_samples": min(4, settings.max_samples)}],
    }


def sample_body(manifest: Manifest, settings: Settings) -> dict:
    schema = _body(
        SampleRequest,
        settings,
        num_samples={"type": "integer", "minimum": 1, "maximum": settings.max_samples},
        format=_formats(manifest),
        labels=_labels(manifest),
    )
    schema["examples"] = [{"num_samples": min(4, settings.max_samples), "seed": 0}]
    return schema


SERVED_BODIES = {
    LogLikelihoodRequest.__name__: log_likelihood_body,
    CompleteRequest.__name__: complete_body,
    SampleRequest.__name__: sample_body,
}
# A reload names a directory beside the served one: one path component, not "." or "..", and at
# most 63 characters so that it stays within the file system's 255 bytes in any encoding.
MODEL_DIR = {
    "anyOf": [
        {
            "type": "string",
            "pattern": "^[^/\\u0000]+$",
            "not": {"enum": [".", ".."]},
            "minLength": 1,
            "maxLength": 63,
        },
        {"type": "null"},
    ],
    "description": "A directory beside the served one (same parent folder); "
    "default: the configured MADE_MODEL_DIR again.",
}


@dataclass(frozen=True)
class ServedVersion:
    """A model version in memory, as the served document describes it."""

    name: str
    version: str
    manifest: Manifest
    latest: bool  # answers /v1/models/{name}/... without a version


MODEL_ROUTES = "/v1/models/{name}"  # the per-model paths all start so
PLAIN_MODEL_ROUTES = ("/v1/model", "/v1/log-likelihood", "/v1/complete", "/v1/sample")


def served_openapi(
    document: dict, default: Manifest | None, models: list[ServedVersion], settings: Settings
) -> dict:
    """FastAPI's ``document`` made true for the models in memory and the key.

    The plain /v1 routes take the default model's bodies (``default``; None: not loaded). The
    per-model routes are written out per model and version in memory, each with its own bodies
    (D, image shape, product, calibration differ between models); before any model is loaded
    they stay templated. Without a key nothing asks for one (admin answers 403 only); with one,
    nothing answers 403.
    """
    document = copy.deepcopy(document)
    paths = document["paths"]
    manifest_of = {path: default for path in PLAIN_MODEL_ROUTES}
    templated = {path: paths.pop(path) for path in list(paths) if path.startswith(MODEL_ROUTES)}
    if not models:
        paths.update(templated)
    for model in models:
        for path, operations in templated.items():
            if "{version}" not in path and not model.latest:
                continue
            concrete = path.replace("{name}", model.name).replace("{version}", model.version)
            paths[concrete] = {
                method: concrete_operation(operation, model)
                for method, operation in operations.items()
            }
            manifest_of[concrete] = model.manifest
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation["responses"]
            if not settings.api_key:
                operation.pop("security", None)
                responses.pop("401", None)
            elif operation.get("security"):
                responses.pop("403", None)
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            build = SERVED_BODIES.get(body.get("schema", {}).get("title"))
            manifest = manifest_of.get(path)
            if build is not None and manifest is not None:
                body["schema"] = build(manifest, settings)
    components = document.get("components", {})
    if not settings.api_key:
        components.pop("securitySchemes", None)
    reload = components.get("schemas", {}).get("ReloadRequest")
    if reload is not None:
        reload["properties"]["model_dir"] = MODEL_DIR
    return document


def concrete_operation(operation: dict, model: ServedVersion) -> dict:
    """A per-model operation for one model (and version): no path parameters, its own id."""
    concrete = copy.deepcopy(operation)
    parameters = [p for p in concrete.get("parameters", []) if p["in"] != "path"]
    if parameters:
        concrete["parameters"] = parameters
    else:
        concrete.pop("parameters", None)
    suffix = re.sub(r"\W", "_", f"{model.name}_{model.version}")
    concrete["operationId"] = f"{concrete['operationId']}_{suffix}"
    concrete["responses"].pop("404", None)  # the path names a model that is there
    return concrete
