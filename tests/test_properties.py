"""Hypothesis properties of the engine on random small models (random degrees and weights).

Small D lets the tests enumerate all 2^D rows, so normalization and exact marginals are checked
against brute-force sums rather than against the engine's own arithmetic.
"""

import itertools
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.onnx_graph import OPSET, build_graph
from service.contract import artifact
from service.contract.masks import draw_pool
from service.inference.engine import Engine

PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TOLERANCE = 1e-4  # nats: float32 network, float64 mixture


@dataclass(frozen=True)
class Spec:
    dim: int
    members: int
    hidden: tuple[int, ...]
    direct: bool
    scale: float
    weights: tuple[float, ...]
    seed: int


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    members = draw(st.integers(1, 4))
    raw = draw(st.lists(st.floats(0.0, 1.0), min_size=members, max_size=members))
    raw[draw(st.integers(0, members - 1))] += 0.1  # at least one member has weight
    total = sum(raw)
    return Spec(
        dim=draw(st.integers(2, 7)),
        members=members,
        hidden=tuple(draw(st.lists(st.integers(4, 12), min_size=0, max_size=2))),
        direct=draw(st.booleans()),
        scale=draw(st.floats(0.1, 3.0)),
        weights=tuple(w / total for w in raw),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def random_engine(spec: Spec) -> Engine:
    """Build graph and manifest from random weights, then load them as the service would."""
    pool = draw_pool(spec.members, spec.dim, list(spec.hidden), "random", spec.seed)
    rng = np.random.default_rng(spec.seed)
    sizes = [spec.dim, *spec.hidden, spec.dim]
    weights = [
        (spec.scale * rng.normal(size=(o, i))).astype(np.float32) for i, o in pairwise(sizes)
    ]
    biases = [(spec.scale * rng.normal(size=o)).astype(np.float32) for o in sizes[1:]]
    direct = (spec.scale * rng.normal(size=(spec.dim, spec.dim))) if spec.direct else None
    graph = build_graph(pool, weights, biases, direct)
    metrics = artifact.SplitMetrics(
        members=[0.0] * spec.members, uniform_mixture=0.0, em_mixture=0.0, shipped_mixture=0.0
    )
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        onnx_path = directory / artifact.ONNX_FILE
        onnx.save(graph, str(onnx_path))
        manifest = artifact.Manifest(
            name="random",
            package_version="0",
            created_at=datetime.now(UTC),
            dim=spec.dim,
            hidden_sizes=list(spec.hidden),
            direct_connections=spec.direct,
            ordering_mode="random",
            members=[
                artifact.Member(ordering=o.tolist(), ordering_kind="random") for o in pool.orderings
            ],
            mixture_weights=list(spec.weights),
            weights_kind="em",
            em_alpha=1.0,
            data=artifact.DataInfo(source="random", binarization="none", split_sizes={}),
            metrics={"valid": metrics, "test": metrics},
            onnx=artifact.OnnxInfo(
                sha256=artifact.sha256_of(onnx_path),
                opset=OPSET,
                num_bytes=onnx_path.stat().st_size,
            ),
        )
        artifact.write_manifest(manifest, directory)
        return Engine.load(directory)


def all_rows(dim: int) -> np.ndarray:
    return np.array(list(itertools.product((0.0, 1.0), repeat=dim)), dtype=np.float32)


@PROPERTY_SETTINGS
@given(spec=specs())
def test_likelihoods_are_normalized_finite_and_bounded_by_the_members(spec):
    engine = random_engine(spec)
    rows = all_rows(spec.dim)
    result = engine.log_likelihood(rows, per_dimension=True)
    assert np.isfinite(result.log_likelihood).all() and (result.log_likelihood <= 0).all()
    assert np.isfinite(result.per_member).all() and (result.per_member <= 0).all()
    # The mixture of the weighted members lies between the worst and the best of them.
    active = result.per_member[:, engine.active]
    assert (result.log_likelihood >= active.min(axis=1) - TOLERANCE).all()
    assert (result.log_likelihood <= active.max(axis=1) + TOLERANCE).all()
    # Per-dimension terms add up to each member's log-likelihood; each member is normalized.
    np.testing.assert_allclose(result.per_dimension.sum(axis=2), result.per_member, atol=TOLERANCE)
    np.testing.assert_allclose(np.exp(result.per_member).sum(axis=0), 1.0, atol=1e-4)
    assert abs(np.exp(result.log_likelihood).sum() - 1.0) < 1e-4


@st.composite
def spec_and_row(draw: st.DrawFn) -> tuple[Spec, np.ndarray]:
    spec = draw(specs())
    values = draw(
        st.lists(st.sampled_from([0.0, 1.0, np.nan]), min_size=spec.dim, max_size=spec.dim)
    )
    return spec, np.array(values, dtype=np.float32)


@PROPERTY_SETTINGS
@given(case=spec_and_row(), num_samples=st.integers(1, 6), seed=st.integers(0, 2**63 - 1))
def test_completions_keep_observed_entries_and_replay_with_the_seed(case, num_samples, seed):
    spec, row = case
    engine = random_engine(spec)
    rows = row[None, :]

    def complete() -> np.ndarray:
        return engine.complete(rows, num_samples, 64, np.random.default_rng(seed)).samples

    first = complete()
    assert first.shape == (1, num_samples, spec.dim)
    assert np.isin(first, (0.0, 1.0)).all()
    observed = ~np.isnan(row)
    assert (first[0][:, observed] == row[observed]).all()
    np.testing.assert_array_equal(first, complete())


@PROPERTY_SETTINGS
@given(case=spec_and_row(), seed=st.integers(0, 2**63 - 1))
def test_marginals_are_finite_and_exact_ones_match_brute_force(case, seed):
    spec, row = case
    engine = random_engine(spec)
    marginal = engine.marginal(row[None, :], 64, np.random.default_rng(seed))
    estimate = marginal.log_likelihood[0]
    assert np.isfinite(estimate) and np.isfinite(marginal.standard_error[0])
    if marginal.method[0] == "exact":
        rows = all_rows(spec.dim)
        observed = ~np.isnan(row)
        agree = (rows[:, observed] == row[observed]).all(axis=1)
        brute = np.logaddexp.reduce(engine.log_likelihood(rows[agree]).log_likelihood)
        assert abs(estimate - brute) < TOLERANCE
        assert estimate <= TOLERANCE


@PROPERTY_SETTINGS
@given(spec=specs(), num_samples=st.integers(1, 20), seed=st.integers(0, 2**63 - 1))
def test_samples_are_binary_rows_of_length_d_and_replay_with_the_seed(spec, num_samples, seed):
    engine = random_engine(spec)
    first = engine.sample(num_samples, np.random.default_rng(seed))
    assert first.shape == (num_samples, spec.dim)
    assert np.isin(first, (0.0, 1.0)).all()
    np.testing.assert_array_equal(first, engine.sample(num_samples, np.random.default_rng(seed)))
