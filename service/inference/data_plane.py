"""What a request means, whichever route it came by: rows and options in, arrays out.

The v1 routes, the ASGI hot route and the V2 route only decode their bodies, call these and shape
the answer. The service's limits on options, which rows are exact and which are estimated, the
mixture or the product, the batcher or a thread: decided here, once. No HTTP types.
"""

import math
import secrets
from dataclasses import dataclass

import numpy as np

from service.contract.artifact import ProductNormaliser, Score
from service.contract.ensemble import Completion
from service.contract.mixture import Combination, Method
from service.inference.anomaly import Anomaly, Surprise, anomaly_of, explanations
from service.inference.categories import missing_categories
from service.inference.engine import Engine
from service.inference.errors import InvalidField, NoProductNormaliser
from service.inference.state import ServingState
from service.settings import Settings, counted_samples


@dataclass(frozen=True)
class LikelihoodOptions:
    combination: Combination = "mixture"
    per_member: bool = False
    per_dimension: bool = False
    num_particles: int | None = None  # for rows with missing entries; None: the default
    seed: int | None = None  # of their estimates; None: a fresh one, reported
    p_value: bool = False  # conformal p-values against the artifact's calibration rows
    alpha: float | None = None  # flag p <= alpha (implies p_value); None: MADE_ANOMALY_ALPHA
    score: Score | None = None  # what the p-value ranks by (implies p_value); None: likelihood
    explain: int | None = None  # this many most surprising dimensions per row

    @property
    def anomaly(self) -> bool:
        return self.p_value or self.alpha is not None or self.score is not None


@dataclass(frozen=True)
class Likelihoods:
    log_likelihood: np.ndarray  # [B] nats: log p(x), or of the observed entries
    observed: np.ndarray  # [B] each row's known entries
    method: list[Method]
    standard_error: np.ndarray  # [B] of an estimate's log, 0 where exact
    effective_sample_size: list[float | None]  # None where exact
    combination: Combination
    per_member: np.ndarray | None = None  # [B, K] when asked
    per_dimension: np.ndarray | None = None  # [B, K, D] when asked
    seed: int | None = None  # when some row was estimated
    product_normaliser: ProductNormaliser | None = None  # the log Z a product answer used
    anomaly: Anomaly | None = None  # when asked
    explanation: list[list[Surprise]] | None = None  # when asked
    # Some dimension is real-valued: log densities in the data's units, which bits do not measure.
    densities: bool = False

    @property
    def bits_per_dim(self) -> np.ndarray | None:
        """None for densities: -log2 of a density depends on the data's units."""
        if self.densities:
            return None
        return -self.log_likelihood / (np.maximum(self.observed, 1) * math.log(2))


@dataclass(frozen=True)
class Completions:
    completion: Completion
    seed: int
    warning: str | None  # which rows' completions repeat, and what would help
    # Per row, {dimension: [C] estimated p(x_d = c | observed)} for its missing categoricals
    probabilities: list[dict[int, np.ndarray]] | None = None


@dataclass(frozen=True)
class Samples:
    samples: np.ndarray  # [n, D]
    seed: int


PLAIN = LikelihoodOptions()


async def log_likelihood(
    state: ServingState, engine: Engine, rows: np.ndarray, options: LikelihoodOptions = PLAIN
) -> Likelihoods:
    """Rows [B, D] (NaN = missing) -> their log-likelihoods, exact for complete rows and for
    missing entries that every weighted member's ordering puts last, importance-sampled else."""
    particles = particles_for(state.settings, options.num_particles)  # even when no row needs it
    observed = engine.dim - np.isnan(rows).sum(axis=1)
    missing = observed < engine.dim
    first_missing = ("inputs", int(np.argmax(missing)))
    if missing.any() and (options.per_member or options.per_dimension):
        raise InvalidField(
            first_missing, "per_member and per_dimension need rows without null entries"
        )
    product = options.combination == "product"
    if product and engine.manifest.product_normaliser is None:
        raise NoProductNormaliser()
    if product and missing.any():
        raise InvalidField(
            first_missing,
            "combination=product needs rows without null entries (its marginals are intractable)",
        )
    calibration = check_anomaly_options(engine, options, missing, first_missing)
    count = len(rows)
    combine = engine.product if product else engine.mixture
    normaliser = engine.manifest.product_normaliser if product else None
    if not missing.any():  # the common case, kept lean: the hot route's every request
        per_member, per_dimension = await exact_terms(state, engine, rows, options)
        log_lik = combine(per_member)
        anomaly = explanation = None
        if calibration is not None:  # compressing rows takes a while: off the event loop
            alpha = options.alpha if options.alpha is not None else state.settings.anomaly_alpha
            score = options.score or "log_likelihood"
            anomaly = await state.in_thread(
                anomaly_of, log_lik, rows, calibration, score, alpha, engine.max_level
            )
        if options.explain is not None:
            explanation = await state.in_thread(
                explanations, rows, per_member, per_dimension, engine.weights, options.explain
            )
        return Likelihoods(
            log_lik,
            observed,
            ["exact"] * count,
            np.zeros(count),
            [None] * count,
            options.combination,
            per_member=per_member if options.per_member else None,
            per_dimension=per_dimension if options.per_dimension else None,
            product_normaliser=normaliser,
            anomaly=anomaly,
            explanation=explanation,
            densities=has_densities(engine),
        )
    log_lik = np.empty(count)
    error = np.zeros(count)
    ess: list[float | None] = [None] * count
    method: list[Method] = ["exact"] * count
    complete = np.flatnonzero(~missing)
    if len(complete):
        per_member, _ = await exact_terms(state, engine, rows[complete], options)
        log_lik[complete] = combine(per_member)
    seed = resolve_seed(options.seed)
    incomplete = np.flatnonzero(missing)
    marginal = await state.cancellable(
        engine.marginal, rows[incomplete], particles, np.random.default_rng(seed)
    )
    log_lik[incomplete] = marginal.log_likelihood
    error[incomplete] = marginal.standard_error
    for i, j in enumerate(incomplete):
        ess[j] = marginal.effective_sample_size[i]
        method[j] = marginal.method[i]
    return Likelihoods(
        log_lik,
        observed,
        method,
        error,
        ess,
        options.combination,
        seed=seed,
        densities=has_densities(engine),
    )


def has_densities(engine: Engine) -> bool:
    """Whether the engine's log-likelihoods are densities (some dimension is real-valued)."""
    return engine.schema is not None and engine.schema.has_continuous


async def exact_terms(
    state: ServingState, engine: Engine, rows: np.ndarray, options: LikelihoodOptions
) -> tuple[np.ndarray, np.ndarray | None]:
    """Complete rows' member log-likelihoods [B, K] (through the batcher unless more is asked),
    and their per-dimension terms [B, K, D] when asked or needed for an explanation."""
    terms = options.per_dimension or options.explain is not None
    if not (options.per_member or terms):
        return await state.member_log_probs(rows, engine), None
    detail = await state.in_thread(engine.log_likelihood, rows, terms)
    return detail.per_member, detail.per_dimension if terms else None


def check_anomaly_options(
    engine: Engine, options: LikelihoodOptions, missing: np.ndarray, first_missing: tuple
) -> np.ndarray | None:
    """Refuse anomaly options the artifact or the rows cannot honour; the calibration scores
    the p-values will be ranked against, when asked."""
    if options.explain is not None:
        if options.explain > engine.dim:
            raise InvalidField(("explain",), f"must be at most the model's {engine.dim} dimensions")
        if missing.any():
            raise InvalidField(first_missing, "explain needs rows without null entries")
    if not options.anomaly:
        return None
    if missing.any():
        raise InvalidField(
            first_missing,
            "p-values need rows without null entries: the calibration rows are scored whole, "
            "so a marginal's log-likelihood is not comparable with them",
        )
    if options.score == "complexity_corrected" and has_densities(engine):
        raise InvalidField(
            ("score",),
            "complexity_corrected applies to discrete data only: it compresses a row as bytes of "
            "its levels, and this model has real-valued columns; use score log_likelihood",
        )
    calibration = engine.manifest.calibration
    if calibration is None:
        raise InvalidField(
            ("p_value",),
            "this model has no calibration rows (train it with --calibration-fraction above 0 "
            "and export it again)",
        )
    if options.combination not in calibration.scores:
        raise InvalidField(
            ("combination",),
            f"this model's calibration has no {options.combination} scores; ask for "
            f"{' or '.join(calibration.scores)}",
        )
    return engine.calibration[options.combination, options.score or "log_likelihood"]


async def complete(
    state: ServingState,
    engine: Engine,
    rows: np.ndarray,
    num_samples: int,
    num_particles: int | None,
    seed: int | None,
    as_images: bool = False,
    categories: bool = False,
) -> Completions:
    """``num_samples`` draws of each row's NaN entries from p(x_missing | x_observed);
    ``categories``: also each missing categorical's estimated conditional probabilities."""
    settings = state.settings
    check_samples(settings, num_samples, len(rows))
    particles = particles_for(settings, num_particles)
    if as_images:
        check_image_model(engine)
    seed = resolve_seed(seed)
    result = await state.cancellable(
        engine.complete,
        rows,
        num_samples,
        particles,
        np.random.default_rng(seed),
        settings.max_particles,
    )
    probabilities = None
    if categories:
        probabilities = await state.in_thread(missing_categories, engine, rows, result.samples)
    return Completions(
        result,
        seed,
        capped_warning(result.particles_capped, num_samples, settings.max_particles),
        probabilities,
    )


async def sample(
    state: ServingState, engine: Engine, num_samples: int, seed: int | None, as_images: bool = False
) -> Samples:
    """Exact samples of the mixture: a member by its weight, then ancestral sampling."""
    check_samples(state.settings, num_samples)
    if as_images:
        check_image_model(engine)
    seed = resolve_seed(seed)
    samples = await state.in_thread(engine.sample, num_samples, np.random.default_rng(seed))
    return Samples(samples, seed)


def particles_for(settings: Settings, requested: int | None) -> int:
    if requested is not None and requested > settings.max_particles:
        raise InvalidField(
            ("num_particles",), f"must be at most {settings.max_particles}, got {requested}"
        )
    return requested or settings.default_particles


def check_samples(settings: Settings, requested: int, rows: int = 1) -> None:
    limit = settings.max_samples
    counted = counted_samples(requested, limit)
    if requested > limit or counted * rows > limit:
        rounded = (
            f" (num_samples counts as {counted}, a power of two)" if counted > requested else ""
        )
        raise InvalidField(
            ("num_samples",),
            f"num_samples x rows must be at most {limit}, got {requested} x {rows}{rounded}",
        )


def check_image_model(engine: Engine) -> None:
    if engine.manifest.image_shape is None:
        raise InvalidField(("format",), "png needs an image model; this model has no image shape")


def capped_warning(capped: list[bool], num_samples: int, max_particles: int) -> str | None:
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


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one that the response reports so it can be replayed."""
    return seed if seed is not None else secrets.randbits(63)
