"""Many completions from one request are as good as independent exact draws (issue 13, point 3).

Sampling-importance-resampling draws every completion of a row from one particle set, so a set
much smaller (in effective size) than the number of completions repeats its few particles. The
service grows the set with the request; these tests judge one request's thousands of completions
against the total variation that the same number of independent exact draws shows.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.client import MadeClient
from service.contract.ensemble import systematic_resample
from tests.conftest import served
from tests.test_service_math import (
    conditional,
    exact_probabilities,
    index_of,
    observed_row,
    tv_bound,
)

NUM_SAMPLES = 8000
# 8000 completions need about 20k particles on this model (ESS / P is about 0.45).
# Two rows of 8000: num_samples counts as its next power of two (8192) against max_samples.
SETTINGS = dict(max_samples=2 * 8192, max_rows=1024, max_particles=65_536)


@pytest.fixture(scope="module")
def tiny(tiny_artifact: Path) -> Iterator[MadeClient]:
    with served(tiny_artifact, **SETTINGS) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_p(tiny: MadeClient) -> np.ndarray:
    return exact_probabilities(tiny, tiny.model()["dim"])


def complete_once(client: MadeClient, row: np.ndarray, seed: int, **fields: object) -> dict:
    """The raw JSON of one /v1/complete request for NUM_SAMPLES completions of ``row``."""
    body = {
        "inputs": [[None if np.isnan(v) else int(v) for v in row]],
        "num_samples": NUM_SAMPLES,
        "seed": seed,
        **fields,
    }
    response = client.http.post("/v1/complete", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def total_variation(completions: np.ndarray, p: np.ndarray) -> float:
    frequencies = np.bincount(index_of(completions), minlength=len(p)) / len(completions)
    return float(0.5 * np.abs(frequencies - p).sum())


@pytest.mark.parametrize(
    ("observed", "seed"), [([1, 4, 6], 0), ([1, 4, 6], 1), ([0, 3, 7], 2), ([7], 3)]
)
def test_one_request_of_many_completions_is_as_good_as_exact_draws(
    tiny: MadeClient, tiny_p: np.ndarray, observed: list[int], seed: int
) -> None:
    """Default particles, non-prefix observed set: TV within exact draws' 99.9% quantile."""
    row = observed_row(tiny_p, observed)
    answer = complete_once(tiny, row, seed)
    assert answer["method"] == ["importance"]
    completions = np.asarray(answer["completions"][0])
    assert completions.shape == (NUM_SAMPLES, len(row))
    target = conditional(tiny_p, row)
    bound = tv_bound(target, NUM_SAMPLES, np.random.default_rng(12345))
    tv = total_variation(completions, target)
    assert tv < bound, f"total variation {tv:.4f} above exact draws' 99.9% quantile {bound:.4f}"
    assert answer["effective_sample_size"][0] >= NUM_SAMPLES
    assert answer["particles_capped"] == [False] and answer["warning"] is None


def test_a_capped_set_says_so(tiny_artifact: Path, tiny_p: np.ndarray) -> None:
    """Below the ESS the request needs, the cap binds: flagged per row and explained."""
    row = observed_row(tiny_p, [1, 4, 6])
    rows = np.stack([np.full_like(row, np.nan), row])  # row 0 is exact: nothing observed
    with served(tiny_artifact, **{**SETTINGS, "max_particles": 1024}) as client:
        body = {"inputs": [[None if np.isnan(v) else int(v) for v in r] for r in rows]}
        response = client.http.post("/v1/complete", json={**body, "num_samples": NUM_SAMPLES})
    answer = response.json()
    assert response.status_code == 200, response.text
    assert answer["method"] == ["exact", "importance"]
    assert answer["particles_capped"] == [False, True]
    assert answer["effective_sample_size"][0] is None
    assert 1 < answer["effective_sample_size"][1] < NUM_SAMPLES
    assert "rows [1]" in answer["warning"] and "MADE_MAX_PARTICLES (1024)" in answer["warning"]


def test_systematic_resampling_counts_and_single_draw() -> None:
    """Each particle is drawn floor or ceil of n times its weight; one draw is rng.choice's."""
    rng = np.random.default_rng(3)
    share = rng.dirichlet(np.full(50, 0.3))
    for n in (1, 7, 1000):
        counts = np.bincount(systematic_resample(share, n, rng), minlength=len(share))
        assert counts.sum() == n
        assert np.all(counts >= np.floor(n * share)) and np.all(counts <= np.ceil(n * share))
    for seed in range(20):
        expected = np.random.default_rng(seed).choice(len(share), size=1, p=share)
        np.testing.assert_array_equal(
            systematic_resample(share, 1, np.random.default_rng(seed)), expected
        )
    drawn = systematic_resample(np.full(4, 0.25), 400, np.random.default_rng(0))
    assert len(set(drawn[:40])) == 4  # shuffled: a prefix is not one particle's run
