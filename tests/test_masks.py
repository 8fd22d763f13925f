"""The contract's masks, checked as boolean matrices without torch: for every shape, depth and
ordering, a member's network reads output d only from inputs earlier in its ordering, and it
reads every earlier input that its degrees connect.

What ``service.contract.masks`` guarantees, stated in degrees (input degree = 1-based position):
- soundness: output d is connected to input i (through the layers or directly) only if
  degree(i) < degree(d);
- through the layers, d reads i exactly when a chain of non-decreasing hidden degrees
  degree(i) <= h_1 <= ... <= h_L < degree(d) exists, so the layers alone give the whole strict
  lower triangle when every layer holds every degree 1..D-1 (widths >= D-1, degrees dealt in turn);
- the direct mask is the whole strict lower triangle, so layers plus direct always are;
- drawn hidden degrees lie in [min degree of the previous layer, D-1]: no unit is cut off from
  every input, and none has degree D, which no output could read.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.contract.masks import MaskPool, draw_pool, hidden_degrees, input_degrees

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


def connectivity(masks: list[np.ndarray]) -> np.ndarray:
    """[out, in] bool of the last layer's units to the first's: the boolean product of [out, in]
    masks taken in forward order."""
    reach = masks[0].astype(np.int64)
    for mask in masks[1:]:
        reach = (mask.astype(np.int64) @ reach > 0).astype(np.int64)
    return reach > 0


def in_ordering(matrix: np.ndarray, ordering: np.ndarray) -> np.ndarray:
    """[D, D] rows (outputs) and columns (inputs) permuted to the member's ordering."""
    return matrix[np.ix_(ordering, ordering)]


def strictly_lower(dim: int) -> np.ndarray:
    return np.tril(np.ones((dim, dim), dtype=bool), k=-1)


def chain_reach(pool: MaskPool, member: int) -> np.ndarray:
    """[D, D] bool, from degrees alone: the smallest degree a non-decreasing chain from input i can
    reach in each layer decides which outputs (degree above it) read i."""
    inputs = pool.input_degrees()[member]
    reach = np.zeros((pool.dim, pool.dim), dtype=bool)
    for i in range(pool.dim):
        lowest = float(inputs[i])
        for layer in pool.hidden_degrees:
            above = layer[member][layer[member] >= lowest]
            lowest = float(above.min()) if above.size else np.inf
        reach[:, i] = inputs > lowest
    return reach


@st.composite
def drawn_pools(draw: st.DrawFn) -> MaskPool:
    """Pools as training draws them: any size, depth, ordering mode and seed."""
    return draw_pool(
        num_members=draw(st.integers(1, 3)),
        dim=draw(st.integers(2, 12)),
        hidden_sizes=draw(st.lists(st.integers(1, 16), max_size=3)),
        mode=draw(st.sampled_from(["random", "natural", "natural-first"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def complete_pools(draw: st.DrawFn) -> MaskPool:
    """One member of any ordering whose every hidden layer (width >= D-1) deals degrees 1..D-1
    in turn, the standard assignment that connects all it may."""
    dim = draw(st.integers(2, 12))
    ordering = np.array(draw(st.permutations(range(dim))), dtype=np.int64)
    widths = draw(st.lists(st.integers(dim - 1, 2 * dim), min_size=1, max_size=3))
    layers = tuple((np.arange(w, dtype=np.int64) % (dim - 1) + 1)[None, :] for w in widths)
    return MaskPool(orderings=ordering[None, :], hidden_degrees=layers)


@PROPERTY_SETTINGS
@given(drawn_pools())
def test_outputs_read_only_earlier_inputs(pool: MaskPool) -> None:
    lower = strictly_lower(pool.dim)
    for k in range(pool.num_members):
        through_layers = connectivity(pool.layer_masks(k))
        with_direct = through_layers | pool.direct_mask(k)
        assert through_layers.shape == (pool.dim, pool.dim)
        assert not (in_ordering(with_direct, pool.orderings[k]) & ~lower).any()
        # The direct mask alone is the whole allowed triangle, so with it nothing is missing.
        assert np.array_equal(in_ordering(with_direct, pool.orderings[k]), lower)


@PROPERTY_SETTINGS
@given(drawn_pools())
def test_layers_connect_exactly_the_non_decreasing_degree_chains(pool: MaskPool) -> None:
    for k in range(pool.num_members):
        assert np.array_equal(connectivity(pool.layer_masks(k)), chain_reach(pool, k))


@PROPERTY_SETTINGS
@given(complete_pools())
def test_every_degree_in_every_layer_connects_all_earlier_inputs(pool: MaskPool) -> None:
    through_layers = connectivity(pool.layer_masks(0))
    assert np.array_equal(in_ordering(through_layers, pool.orderings[0]), strictly_lower(pool.dim))


@PROPERTY_SETTINGS
@given(drawn_pools())
def test_drawn_hidden_units_read_some_input_and_stay_below_dim(pool: MaskPool) -> None:
    for k in range(pool.num_members):
        masks = pool.layer_masks(k)
        for depth, layer in enumerate(pool.hidden_degrees):
            assert layer[k].min() >= 1 and layer[k].max() <= pool.dim - 1
            assert connectivity(masks[: depth + 1]).any(axis=1).all()


@PROPERTY_SETTINGS
@given(st.permutations(range(9)), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_degrees_are_positions_and_hidden_degrees_stay_in_range(
    ordering: list[int], size: int, seed: int
) -> None:
    order = np.array(ordering, dtype=np.int64)
    degrees = input_degrees(order)
    assert np.array_equal(degrees[order], np.arange(1, len(order) + 1))
    previous = np.array([3, 5, 7])
    drawn = hidden_degrees(previous, size, len(order), np.random.default_rng(seed))
    assert drawn.shape == (size,)
    assert drawn.min() >= 3 and drawn.max() <= len(order) - 1


def test_one_member_by_hand() -> None:
    """D=3 in ordering (2, 0, 1), one hidden unit of degree 1: only x_2 is read, by x_0 and x_1."""
    pool = MaskPool(
        orderings=np.array([[2, 0, 1]]), hidden_degrees=(np.array([[1]], dtype=np.int64),)
    )
    expected = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=bool)  # [output, input]
    assert np.array_equal(connectivity(pool.layer_masks(0)), expected)
