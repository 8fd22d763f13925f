"""The /v1 API: model metadata, log-likelihood, completion and sampling. Routes only adapt HTTP."""

import hashlib
import math
from importlib.metadata import version

import numpy as np
import onnxruntime
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.errors import InvalidField
from service.inference.engine import Engine
from service.inference.state import ServingState, resolve_seed, runtime_of
from service.transport.body import M, parse_body, parse_rows_body, read_body
from service.transport.png import grid_png
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
    counted_samples,
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
    engine = runtime_of(request).require_engine()
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
    )


async def _read_rows(
    request: Request, runtime: ServingState, engine: Engine, model: type[M]
) -> tuple[M, np.ndarray]:
    """The validated body and its rows [B, D] (NaN = null), within the row limit."""
    raw = await read_body(request, runtime.settings.max_body_bytes)
    body, rows = parse_rows_body(raw, model, engine.dim, engine.manifest.image_shape)
    limit = runtime.settings.max_rows
    if len(rows) > limit:
        raise InvalidField(("inputs",), f"has {len(rows)} rows, the limit is {limit}")
    request.state.rows = len(rows)  # for the request log
    return body, rows


def _particles(runtime: ServingState, requested: int | None) -> int:
    settings = runtime.settings
    if requested is not None and requested > settings.max_particles:
        raise InvalidField(
            ("num_particles",), f"must be at most {settings.max_particles}, got {requested}"
        )
    return requested or settings.default_particles


def _samples(runtime: ServingState, requested: int, rows: int = 1) -> None:
    limit = runtime.settings.max_samples
    counted = counted_samples(requested, limit)
    if requested > limit or counted * rows > limit:
        rounded = (
            f" (num_samples counts as {counted}, a power of two)" if counted > requested else ""
        )
        raise InvalidField(
            ("num_samples",),
            f"num_samples x rows must be at most {limit}, got {requested} x {rows}{rounded}",
        )


def _png_wanted(request: Request, fmt: str, engine: Engine) -> bool:
    wanted = fmt == "png" or request.headers.get("accept", "").startswith("image/png")
    if wanted and engine.manifest.image_shape is None:
        raise InvalidField(("format",), "png needs an image model; this model has no image shape")
    return wanted


def likelihood_fields(
    log_lik: np.ndarray,
    observed: np.ndarray,
    method: list[str],
    standard_error: np.ndarray,
    effective_sample_size: list[float | None],
    combination: str,
) -> dict[str, object]:
    """The fields every log-likelihood response has, whichever path (see service.transport.hot_path)
    answered it; ``observed`` counts each row's known entries, for bits per dimension."""
    return {
        "log_likelihood": log_lik,
        "bits_per_dim": -log_lik / (np.maximum(observed, 1) * math.log(2)),
        "method": method,
        "standard_error": standard_error,
        "effective_sample_size": effective_sample_size,
        "combination": combination,
    }


@router.post(
    "/log-likelihood",
    response_model=LogLikelihoodResponse,
    responses=ERRORS,
    openapi_extra=_body_schema(LogLikelihoodRequest),
)
async def log_likelihood(request: Request) -> NumpyJSONResponse:
    """log p(x) under the mixture (or the normalised product), in nats; marginal of the observed
    entries for rows with null."""
    runtime = runtime_of(request)
    engine = runtime.require_engine()
    body, rows = await _read_rows(request, runtime, engine, LogLikelihoodRequest)
    particles = _particles(runtime, body.num_particles)  # refused even when no row needs it
    missing = np.isnan(rows).any(axis=1)
    if missing.any() and (body.per_member or body.per_dimension):
        raise InvalidField(
            ("inputs", int(np.argmax(missing))),
            "per_member and per_dimension need rows without null entries",
        )
    product = body.combination == "product"
    if product and engine.manifest.product_normaliser is None:
        raise InvalidField(
            ("combination",),
            "this model has no product normaliser (export it with made-export --product)",
        )
    if product and missing.any():
        raise InvalidField(
            ("inputs", int(np.argmax(missing))),
            "combination=product needs rows without null entries (its marginals are intractable)",
        )
    count = len(rows)
    log_lik = np.empty(count)
    error = np.zeros(count)
    ess: list[float | None] = [None] * count
    method = ["exact"] * count
    result: dict[str, object] = {}
    complete = np.flatnonzero(~missing)
    if len(complete):
        if body.per_dimension or body.per_member:
            detail = await runtime.bounded(
                run_in_threadpool(engine.log_likelihood, rows[complete], body.per_dimension)
            )
            log_lik[complete] = (
                engine.product(detail.per_member) if product else detail.log_likelihood
            )
            if body.per_member:
                result["per_member"] = detail.per_member
            if body.per_dimension:
                result["per_dimension"] = detail.per_dimension
        else:
            per_member = await runtime.member_log_probs(rows[complete], engine)
            log_lik[complete] = (engine.product if product else engine.mixture)(per_member)
    incomplete = np.flatnonzero(missing)
    if len(incomplete):
        seed = resolve_seed(body.seed)
        marginal = await runtime.cancellable(
            engine.marginal, rows[incomplete], particles, np.random.default_rng(seed)
        )
        log_lik[incomplete] = marginal.log_likelihood
        error[incomplete] = marginal.standard_error
        for i, j in enumerate(incomplete):
            ess[j] = marginal.effective_sample_size[i]
            method[j] = marginal.method[i]
        result["seed"] = seed
    observed = (~np.isnan(rows)).sum(axis=1)
    result.update(likelihood_fields(log_lik, observed, method, error, ess, body.combination))
    if product:
        result["product_normaliser"] = engine.manifest.product_normaliser.model_dump()
    return NumpyJSONResponse(result)


@router.post(
    "/complete",
    response_model=CompleteResponse,
    responses={**ERRORS, **PNG},
    openapi_extra=_body_schema(CompleteRequest),
)
async def complete(request: Request) -> Response:
    """Completions of the null entries drawn from p(x_missing | x_observed) under the mixture."""
    runtime = runtime_of(request)
    engine = runtime.require_engine()
    body, rows = await _read_rows(request, runtime, engine, CompleteRequest)
    _samples(runtime, body.num_samples, len(rows))
    particles = _particles(runtime, body.num_particles)
    png = _png_wanted(request, body.format, engine)
    seed = resolve_seed(body.seed)
    max_particles = runtime.settings.max_particles
    result = await runtime.cancellable(
        engine.complete,
        rows,
        body.num_samples,
        particles,
        np.random.default_rng(seed),
        max_particles,
    )
    if png:
        return Response(
            grid_png(
                result.samples.reshape(-1, engine.dim),
                engine.manifest.image_shape,
                columns=body.num_samples,
            ),
            media_type="image/png",
        )
    return NumpyJSONResponse(
        {
            "completions": result.samples.astype(np.uint8),
            "method": result.method,
            "effective_sample_size": result.effective_sample_size,
            "particles_capped": result.particles_capped,
            "warning": _capped_warning(result.particles_capped, body.num_samples, max_particles),
            "seed": seed,
        }
    )


def _capped_warning(capped: list[bool], num_samples: int, max_particles: int) -> str | None:
    """Say which rows' completions repeat more than independent draws would, and what helps."""
    rows = [i for i, flag in enumerate(capped) if flag]
    if not rows:
        return None
    return (
        f"rows {rows}: the particle set reached MADE_MAX_PARTICLES ({max_particles}) with an "
        f"effective sample size below num_samples ({num_samples}), so their completions repeat "
        "more than independent draws would; ask fewer completions per request or raise "
        "MADE_MAX_PARTICLES"
    )


@router.post(
    "/sample",
    response_model=SampleResponse,
    responses={**ERRORS, **PNG},
    openapi_extra=_body_schema(SampleRequest),
)
async def sample(request: Request) -> Response:
    """Exact samples of the mixture: a member by its weight, then ancestral sampling."""
    runtime = runtime_of(request)
    engine = runtime.require_engine()
    body = parse_body(await read_body(request, runtime.settings.max_body_bytes), SampleRequest)
    _samples(runtime, body.num_samples)
    png = _png_wanted(request, body.format, engine)
    seed = resolve_seed(body.seed)
    samples = await runtime.bounded(
        run_in_threadpool(engine.sample, body.num_samples, np.random.default_rng(seed))
    )
    if png:
        return Response(grid_png(samples, engine.manifest.image_shape), media_type="image/png")
    return NumpyJSONResponse({"samples": samples.astype(np.uint8), "seed": seed})
