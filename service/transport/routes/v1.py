"""The /v1 API: model metadata, log-likelihood, completion and sampling. Routes only adapt HTTP."""

import hashlib
import math
from collections.abc import Callable
from dataclasses import fields
from importlib.metadata import version
from typing import Any

import numpy as np
import onnxruntime
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from service.contract.image_grid import grid_png
from service.inference import data_plane
from service.inference.data_plane import LikelihoodOptions
from service.inference.engine import Engine
from service.inference.errors import InvalidField, UnknownModel
from service.inference.index import repository_index
from service.inference.models import LoadedModel
from service.inference.state import ServingState
from service.transport.answers import (
    completion_body,
    labelled_dimensions,
    likelihood_body,
    rows_body,
)
from service.transport.app_state import serving_state
from service.transport.body import M, parse_body, parse_rows_body, read_body
from service.transport.columns import is_table
from service.transport.responses import NumpyJSONResponse
from service.transport.schemas import (
    CompleteRequest,
    CompleteResponse,
    ErrorBody,
    LogLikelihoodRequest,
    LogLikelihoodResponse,
    ModelEntry,
    ModelInfo,
    ModelList,
    ModelVersionEntry,
    SampleRequest,
    SampleResponse,
    ValidationErrorBody,
)

ERRORS = {
    400: {"model": ErrorBody, "description": "Body is not JSON."},
    401: {"model": ErrorBody, "description": "MADE_API_KEY is set and the request lacks it."},
    413: {"model": ErrorBody, "description": "Body too large."},
    415: {"model": ErrorBody, "description": "Not application/json."},
    422: {"model": ValidationErrorBody, "description": "A field is invalid; loc names it."},
    503: {"model": ErrorBody, "description": "Not ready, overloaded or timed out; retry."},
}
PNG = {200: {"content": {"image/png": {}}, "description": "JSON, or a PNG grid when asked."}}

router = APIRouter(prefix="/v1", tags=["v1"])


def _body_schema(model: type) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def model_info_of(model: LoadedModel) -> ModelInfo:
    m = model.engine.manifest
    digest = hashlib.sha256(str([member.ordering for member in m.members]).encode()).hexdigest()
    test_nll = m.metrics["test"].shipped_mixture
    densities = model.engine.schema is not None and model.engine.schema.has_continuous
    return ModelInfo(
        name=m.name,
        model=model.name,
        version=model.version,
        dim=m.dim,
        image_shape=m.image_shape,
        num_members=m.num_members,
        mixture_weights=m.mixture_weights,
        weights_kind=m.weights_kind,
        orderings_digest=digest[:16],
        ordering_kinds=[member.ordering_kind for member in m.members],
        hidden_sizes=m.hidden_sizes,
        data_source=m.data.source,
        binarization=m.data.binarization,
        valid_nll=m.metrics["valid"].shipped_mixture,
        test_nll=test_nll,
        test_bits_per_dim=None if densities else test_nll / (m.dim * math.log(2)),
        artifact_sha256=m.onnx.sha256,
        created_at=m.created_at.isoformat(),
        versions={
            "made_serve": version("made-serve"),
            "artifact_package": m.package_version,
            "manifest_schema": str(m.schema_version),
            "onnxruntime": onnxruntime.__version__,
        },
        calibration_rows=len(m.calibration.rows) if m.calibration else None,
        dimensions=m.dimensions,
    )


async def chosen_model(
    request: Request, name: str | None, model_version: str | None
) -> LoadedModel:
    """The model the path names (the default one for the plain routes), noted for the request
    log and the metrics."""
    model = await serving_state(request).model(name, model_version)
    request.state.model = model.name
    request.state.model_version = model.version
    return model


async def read_rows(
    request: Request, state: ServingState, engine: Engine, body_model: type[M]
) -> tuple[M, np.ndarray]:
    """The validated body and its rows [B, D] (NaN = null), within the row limit."""
    raw = await read_body(request, state.settings.max_body_bytes)
    body, rows = parse_rows_body(
        raw, body_model, engine.dim, engine.manifest.image_shape, engine.schema
    )
    limit = state.settings.max_rows
    if len(rows) > limit:
        raise InvalidField(("inputs",), f"has {len(rows)} rows, the limit is {limit}")
    request.state.rows = len(rows)  # for the request log
    return body, rows


def _png_wanted(request: Request, fmt: str) -> bool:
    return fmt == "png" or request.headers.get("accept", "").startswith("image/png")


async def model_info(request: Request, name: str | None, model_version: str | None) -> ModelInfo:
    """The model's artifact: D, K, weights, data, test NLL, sha256, versions."""
    return model_info_of(await chosen_model(request, name, model_version))


async def log_likelihood(
    request: Request, name: str | None, model_version: str | None
) -> NumpyJSONResponse:
    """log p(x) under the mixture (or the normalised product), in nats; marginal of the observed
    entries for rows with null."""
    state = serving_state(request)
    engine = (await chosen_model(request, name, model_version)).engine
    body, rows = await read_rows(request, state, engine, LogLikelihoodRequest)
    # The body's options are the data plane's, field for field.
    options = LikelihoodOptions(
        **{f.name: getattr(body, f.name) for f in fields(LikelihoodOptions)}
    )
    answer = await data_plane.log_likelihood(state, engine, rows, options)
    return NumpyJSONResponse(likelihood_body(answer, engine.manifest.image_shape))


async def complete(request: Request, name: str | None, model_version: str | None) -> Response:
    """Completions of the null entries drawn from p(x_missing | x_observed) under the mixture."""
    state = serving_state(request)
    engine = (await chosen_model(request, name, model_version)).engine
    body, rows = await read_rows(request, state, engine, CompleteRequest)
    if body.labels:
        labelled_dimensions(engine.schema)
    png = _png_wanted(request, body.format)
    answer = await data_plane.complete(
        state,
        engine,
        rows,
        body.num_samples,
        body.num_particles,
        body.seed,
        as_images=png,
        categories=is_table(engine.schema) and not png,
    )
    if png:
        samples = answer.completion.samples.reshape(-1, engine.dim)
        grid = grid_png(samples, engine.manifest.image_shape, body.num_samples, engine.max_level)
        return Response(grid, media_type="image/png")
    return NumpyJSONResponse(completion_body(answer, engine, body.labels))


async def sample(request: Request, name: str | None, model_version: str | None) -> Response:
    """Exact samples of the mixture: a member by its weight, then ancestral sampling."""
    state = serving_state(request)
    engine = (await chosen_model(request, name, model_version)).engine
    body = parse_body(await read_body(request, state.settings.max_body_bytes), SampleRequest)
    if body.labels:
        labelled_dimensions(engine.schema)
    png = _png_wanted(request, body.format)
    answer = await data_plane.sample(state, engine, body.num_samples, body.seed, as_images=png)
    if png:
        return Response(
            grid_png(answer.samples, engine.manifest.image_shape, max_level=engine.max_level),
            media_type="image/png",
        )
    samples = rows_body(answer.samples, engine, body.labels)
    return NumpyJSONResponse({"samples": samples, "seed": answer.seed})


@router.get("/models", response_model=ModelList, responses={401: ERRORS[401], 503: ERRORS[503]})
async def list_models(request: Request) -> ModelList:
    """Every model the repository holds, each version's state, and which one is the default."""
    state = serving_state(request)
    state.require_ready()
    try:
        default = state.default_name()
    except UnknownModel:
        default = None
    entries: dict[str, ModelEntry] = {}
    for status in await state.in_thread(repository_index, state):
        m = status.manifest
        entry = entries.setdefault(
            status.name, ModelEntry(name=status.name, default=status.name == default, versions=[])
        )
        entry.versions.append(
            ModelVersionEntry(
                version=status.version,
                state=status.state,
                reason=status.reason,
                dim=m.dim if m else None,
                num_members=m.num_members if m else None,
                image_shape=m.image_shape if m else None,
                artifact_sha256=m.onnx.sha256 if m else None,
                limits=status.limits,
            )
        )
    return ModelList(models=list(entries.values()))


# Each operation answers for the default model, for a named one (its latest loaded version) and
# for a named version: three paths, one handler.
NOT_FOUND = {404: {"model": ErrorBody, "description": "No such model or version."}}


def add_model_routes(
    default_path: str, suffix: str, handler: Callable, method: str, **route: Any
) -> list[APIRoute]:
    """Mount ``handler(request, name, version)`` at ``default_path`` (the default model),
    ``/models/{name}`` + ``suffix`` and ``/models/{name}/versions/{version}`` + ``suffix``."""

    async def default_model(request: Request) -> Any:
        return await handler(request, None, None)

    async def named_model(request: Request, name: str) -> Any:
        return await handler(request, name, None)

    async def model_version(request: Request, name: str, version: str) -> Any:
        return await handler(request, name, version)

    mounts = (
        (default_path, default_model, {}),
        (f"/models/{{name}}{suffix}", named_model, NOT_FOUND),
        (f"/models/{{name}}/versions/{{version}}{suffix}", model_version, NOT_FOUND),
    )
    responses = route.pop("responses")
    added = []
    for path, endpoint, not_found in mounts:
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            name=f"{handler.__name__} ({endpoint.__name__.replace('_', ' ')})",
            description=handler.__doc__,
            responses={**responses, **not_found},
            **route,
        )
        added.append(router.routes[-1])
    return added


MODEL_INFO_ROUTES = add_model_routes(
    "/model",
    "",
    model_info,
    "GET",
    response_model=ModelInfo,
    responses={401: ERRORS[401], 503: ERRORS[503]},
)
LIKELIHOOD_ROUTES = add_model_routes(
    "/log-likelihood",
    "/log-likelihood",
    log_likelihood,
    "POST",
    response_model=LogLikelihoodResponse,
    responses=ERRORS,
    openapi_extra=_body_schema(LogLikelihoodRequest),
)
add_model_routes(
    "/complete",
    "/complete",
    complete,
    "POST",
    response_model=CompleteResponse,
    responses={**ERRORS, **PNG},
    openapi_extra=_body_schema(CompleteRequest),
)
add_model_routes(
    "/sample",
    "/sample",
    sample,
    "POST",
    response_model=SampleResponse,
    responses={**ERRORS, **PNG},
    openapi_extra=_body_schema(SampleRequest),
)
