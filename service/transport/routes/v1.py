"""The /v1 API: model metadata, log-likelihood, completion and sampling. Routes only adapt HTTP."""

import hashlib
import math
from dataclasses import fields
from importlib.metadata import version

import numpy as np
import onnxruntime
from fastapi import APIRouter, Request, Response

from service.contract.image_grid import grid_png
from service.inference import data_plane
from service.inference.data_plane import LikelihoodOptions
from service.inference.engine import Engine
from service.inference.errors import InvalidField
from service.inference.state import ServingState
from service.transport.answers import completion_body, likelihood_body
from service.transport.app_state import serving_state
from service.transport.body import M, parse_body, parse_rows_body, read_body
from service.transport.responses import NumpyJSONResponse
from service.transport.schemas import (
    CompleteRequest,
    CompleteResponse,
    ErrorBody,
    LogLikelihoodRequest,
    LogLikelihoodResponse,
    ModelInfo,
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


@router.get("/model", response_model=ModelInfo, responses={401: ERRORS[401], 503: ERRORS[503]})
async def model_info(request: Request) -> ModelInfo:
    engine = serving_state(request).require_engine()
    m = engine.manifest
    digest = hashlib.sha256(str([member.ordering for member in m.members]).encode()).hexdigest()
    test_nll = m.metrics["test"].shipped_mixture
    return ModelInfo(
        name=m.name,
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
        test_bits_per_dim=test_nll / (m.dim * math.log(2)),
        artifact_sha256=m.onnx.sha256,
        created_at=m.created_at.isoformat(),
        versions={
            "made_serve": version("made-serve"),
            "artifact_package": m.package_version,
            "manifest_schema": str(m.schema_version),
            "onnxruntime": onnxruntime.__version__,
        },
        calibration_rows=len(m.calibration.rows) if m.calibration else None,
    )


async def _read_rows(
    request: Request, state: ServingState, engine: Engine, model: type[M]
) -> tuple[M, np.ndarray]:
    """The validated body and its rows [B, D] (NaN = null), within the row limit."""
    raw = await read_body(request, state.settings.max_body_bytes)
    body, rows = parse_rows_body(raw, model, engine.dim, engine.manifest.image_shape)
    limit = state.settings.max_rows
    if len(rows) > limit:
        raise InvalidField(("inputs",), f"has {len(rows)} rows, the limit is {limit}")
    request.state.rows = len(rows)  # for the request log
    return body, rows


def _png_wanted(request: Request, fmt: str) -> bool:
    return fmt == "png" or request.headers.get("accept", "").startswith("image/png")


@router.post(
    "/log-likelihood",
    response_model=LogLikelihoodResponse,
    responses=ERRORS,
    openapi_extra=_body_schema(LogLikelihoodRequest),
)
async def log_likelihood(request: Request) -> NumpyJSONResponse:
    """log p(x) under the mixture (or the normalised product), in nats; marginal of the observed
    entries for rows with null."""
    state = serving_state(request)
    engine = state.require_engine()
    body, rows = await _read_rows(request, state, engine, LogLikelihoodRequest)
    # The body's options are the data plane's, field for field.
    options = LikelihoodOptions(
        **{f.name: getattr(body, f.name) for f in fields(LikelihoodOptions)}
    )
    answer = await data_plane.log_likelihood(state, engine, rows, options)
    return NumpyJSONResponse(likelihood_body(answer, engine.manifest.image_shape))


@router.post(
    "/complete",
    response_model=CompleteResponse,
    responses={**ERRORS, **PNG},
    openapi_extra=_body_schema(CompleteRequest),
)
async def complete(request: Request) -> Response:
    """Completions of the null entries drawn from p(x_missing | x_observed) under the mixture."""
    state = serving_state(request)
    engine = state.require_engine()
    body, rows = await _read_rows(request, state, engine, CompleteRequest)
    png = _png_wanted(request, body.format)
    answer = await data_plane.complete(
        state, engine, rows, body.num_samples, body.num_particles, body.seed, as_images=png
    )
    if png:
        samples = answer.completion.samples.reshape(-1, engine.dim)
        grid = grid_png(samples, engine.manifest.image_shape, columns=body.num_samples)
        return Response(grid, media_type="image/png")
    return NumpyJSONResponse(completion_body(answer))


@router.post(
    "/sample",
    response_model=SampleResponse,
    responses={**ERRORS, **PNG},
    openapi_extra=_body_schema(SampleRequest),
)
async def sample(request: Request) -> Response:
    """Exact samples of the mixture: a member by its weight, then ancestral sampling."""
    state = serving_state(request)
    engine = state.require_engine()
    body = parse_body(await read_body(request, state.settings.max_body_bytes), SampleRequest)
    png = _png_wanted(request, body.format)
    answer = await data_plane.sample(state, engine, body.num_samples, body.seed, as_images=png)
    if png:
        return Response(
            grid_png(answer.samples, engine.manifest.image_shape), media_type="image/png"
        )
    return NumpyJSONResponse({"samples": answer.samples.astype(np.uint8), "seed": answer.seed})
