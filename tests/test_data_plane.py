"""The data plane without HTTP: arrays and options in, the engine's own numbers out, refusals as
domain errors that the transport's one table maps to a status and a body."""

import inspect
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.inference import data_plane, errors
from service.inference.data_plane import LikelihoodOptions
from service.inference.engine import Engine
from service.inference.state import ServingState
from service.settings import Settings
from service.transport import errors as transport_errors
from service.transport.errors import (
    STATUS,
    error_response,
    headers_of,
    protocol_error_response,
    status_of,
)
from tests.conftest import run_async


@pytest.fixture(scope="module")
def state(tiny_artifact: Path) -> ServingState:
    """A ready state without a batcher: the data plane runs the engine in a thread."""
    settings = Settings(model_dir=tiny_artifact, max_particles=512)
    return ServingState.with_engine(settings, Engine.load(tiny_artifact))


def rows_of(engine: Engine, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((count, engine.dim)) < 0.5).astype(np.float32)


def test_complete_rows_get_the_engine_mixture(state: ServingState) -> None:
    engine = state.engine
    rows = rows_of(engine, 7)
    answer = run_async(data_plane.log_likelihood(state, engine, rows))
    expected = engine.log_likelihood(rows).log_likelihood
    np.testing.assert_array_equal(answer.log_likelihood, expected)
    assert answer.method == ["exact"] * 7 and answer.seed is None
    np.testing.assert_array_equal(answer.observed, np.full(7, engine.dim))
    np.testing.assert_allclose(answer.bits_per_dim, -expected / (engine.dim * np.log(2)))
    assert answer.per_member is None and answer.per_dimension is None


def test_details_are_returned_only_when_asked(state: ServingState) -> None:
    engine = state.engine
    rows = rows_of(engine, 3, seed=1)
    options = LikelihoodOptions(per_dimension=True)
    answer = run_async(data_plane.log_likelihood(state, engine, rows, options))
    detail = engine.log_likelihood(rows, per_dimension=True)
    np.testing.assert_array_equal(answer.per_dimension, detail.per_dimension)
    assert answer.per_member is None
    # The terms sum to each member's log-likelihood, whose mixture is the answer.
    np.testing.assert_allclose(answer.per_dimension.sum(axis=2), detail.per_member, atol=1e-4)


def test_rows_with_missing_entries_are_estimated_with_the_reported_seed(
    state: ServingState,
) -> None:
    engine = state.engine
    rows = rows_of(engine, 4, seed=2)
    rows[1, ::2] = np.nan  # every other entry: a prefix of no ordering
    rows[3, 1] = np.nan
    options = LikelihoodOptions(num_particles=64, seed=11)
    answer = run_async(data_plane.log_likelihood(state, engine, rows, options))
    complete = engine.log_likelihood(rows[[0, 2]]).log_likelihood
    np.testing.assert_array_equal(answer.log_likelihood[[0, 2]], complete)
    marginal = engine.marginal(rows[[1, 3]], 64, np.random.default_rng(11))
    np.testing.assert_array_equal(answer.log_likelihood[[1, 3]], marginal.log_likelihood)
    np.testing.assert_array_equal(answer.standard_error[[1, 3]], marginal.standard_error)
    assert answer.seed == 11
    assert answer.method[0] == "exact" and answer.method[1] == "importance"
    np.testing.assert_array_equal(answer.observed, (~np.isnan(rows)).sum(axis=1))


def test_samples_and_completions_replay_from_their_seed(state: ServingState) -> None:
    engine = state.engine
    samples = run_async(data_plane.sample(state, engine, 6, seed=3))
    np.testing.assert_array_equal(samples.samples, engine.sample(6, np.random.default_rng(3)))
    given = rows_of(engine, 2, seed=4)
    given[:, 3:] = np.nan
    first = run_async(data_plane.complete(state, engine, given, 4, None, seed=5))
    again = run_async(data_plane.complete(state, engine, given, 4, None, seed=5))
    np.testing.assert_array_equal(first.completion.samples, again.completion.samples)
    kept = ~np.isnan(given)[:, None, :].repeat(4, axis=1)
    np.testing.assert_array_equal(
        first.completion.samples[kept], np.repeat(given[:, None, :], 4, axis=1)[kept]
    )
    assert first.seed == 5


class NoWork:
    """Stands in for the model: a refused request must not reach it."""

    async def __call__(self, *args: object) -> None:
        raise AssertionError("the model ran for a refused request")


@pytest.mark.parametrize(
    "options, hole, loc",
    [
        (LikelihoodOptions(num_particles=10**6), False, ("num_particles",)),
        (LikelihoodOptions(per_member=True), True, ("inputs", 1)),
        (LikelihoodOptions(combination="product"), False, ("combination",)),
        (LikelihoodOptions(combination="product"), True, ("combination",)),
    ],
    ids=["particles", "details-of-a-marginal", "product-unnormalised", "product-first"],
)
def test_refusals_name_the_field_before_any_work(
    state: ServingState, options: LikelihoodOptions, hole: bool, loc: tuple
) -> None:
    engine = state.engine  # exported without a product normaliser
    rows = rows_of(engine, 3)
    if hole:
        rows[1, 0] = np.nan
    refused = ServingState.with_engine(state.settings, engine)
    refused.member_log_probs = NoWork()
    refused.in_thread = NoWork()
    with pytest.raises(errors.InvalidField) as raised:
        run_async(data_plane.log_likelihood(refused, engine, rows, options))
    assert raised.value.loc == loc
    assert status_of(raised.value) == 422


def test_the_engine_itself_refuses_an_unnormalised_product(state: ServingState) -> None:
    """Not a bare ValueError (a 500) for a caller that skipped the data plane's check."""
    per_member = state.engine.member_log_probs(rows_of(state.engine, 2))
    with pytest.raises(errors.NoProductNormaliser):
        state.engine.product(per_member)


def test_image_answers_need_an_image_model(state: ServingState) -> None:
    with pytest.raises(errors.InvalidField) as raised:
        run_async(data_plane.sample(state, state.engine, 2, seed=0, as_images=True))
    assert raised.value.loc == ("format",)


def error_kinds() -> list[type[errors.ServiceError]]:
    kinds = []
    for module in (errors, transport_errors):
        for _, kind in inspect.getmembers(module, inspect.isclass):
            if issubclass(kind, errors.ServiceError) and kind is not errors.ServiceError:
                kinds.append(kind)
    return sorted(set(kinds), key=lambda kind: kind.__name__)


def instance(kind: type[errors.ServiceError]) -> errors.ServiceError:
    if kind is errors.NoProductNormaliser:
        return kind()
    if issubclass(kind, errors.InvalidField):
        return kind(("inputs", 0), "bad")
    return kind("why")


@pytest.mark.parametrize("kind", error_kinds(), ids=lambda kind: kind.__name__)
def test_every_error_kind_has_a_client_status(kind: type[errors.ServiceError]) -> None:
    exc = instance(kind)
    assert 400 <= status_of(exc) < 500 or status_of(exc) == 503
    assert any(issubclass(kind, mapped) for mapped in STATUS)
    if issubclass(kind, errors.Unavailable):
        assert status_of(exc) == 503 and headers_of(exc) == {"Retry-After": "1"}


def test_one_error_in_the_v1_and_the_v2_body() -> None:
    exc = errors.InvalidField(("inputs", 2, 5), "must be 0 or 1, got 3")
    v1 = error_response(exc)
    assert v1.status_code == 422
    assert orjson.loads(v1.body) == {
        "detail": [
            {"loc": ["body", "inputs", 2, 5], "msg": "must be 0 or 1, got 3", "type": "value_error"}
        ]
    }
    v2 = protocol_error_response(exc)
    assert v2.status_code == 400  # the protocol has no 422
    assert orjson.loads(v2.body) == {"error": "inputs.2.5: must be 0 or 1, got 3"}
    busy = protocol_error_response(errors.Overloaded("queue full"))
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert orjson.loads(busy.body) == {"error": "queue full"}
