"""MADE connectivity as integer degrees (Germain et al. 2015), shared by trainer and service.

Degrees follow the paper's 1-based convention: input ``d`` has degree ``position(d) + 1`` in its
member's ordering, hidden units have degrees in ``[min degree of the previous layer, D - 1]``.
Masks are always derived from degrees, never stored, so both sides of the artifact agree by
construction.
"""

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from service.contract.schema import Schema

OrderingMode = Literal["random", "natural", "natural-first"]


@dataclass(frozen=True)
class MaskPool:
    """A fixed pool of K members: one ordering and one set of hidden degrees each.

    orderings: [K, D] int, ``orderings[k, p]`` is the dimension at position p of member k.
    hidden_degrees: one [K, H_l] int array per hidden layer.
    """

    orderings: np.ndarray
    hidden_degrees: tuple[np.ndarray, ...]

    @property
    def num_members(self) -> int:
        return int(self.orderings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.orderings.shape[1])

    def input_degrees(self) -> np.ndarray:
        """[K, D] int: degree of each input dimension (its 1-based position) for every member."""
        return np.stack([input_degrees(order) for order in self.orderings])

    def layer_masks(self, member: int, schema: "Schema | None" = None) -> list[np.ndarray]:
        """Binary masks [out, in] of every hidden layer, then of the output layer, of one member.

        With a schema, a dimension's input units and output units all carry its degree, so a
        dimension of several units stays autoregressive; without one, one unit per dimension.
        """
        inputs, outputs = unit_degrees(input_degrees(self.orderings[member]), schema)
        degrees = [inputs] + [h[member] for h in self.hidden_degrees]
        masks = [hidden_mask(out, inp) for inp, out in itertools.pairwise(degrees)]
        masks.append(output_mask(outputs, degrees[-1]))
        return masks

    def direct_mask(self, member: int, schema: "Schema | None" = None) -> np.ndarray:
        """[U, I] mask of direct input-to-output connections for one member ([D, D] binary)."""
        inputs, outputs = unit_degrees(input_degrees(self.orderings[member]), schema)
        return output_mask(outputs, inputs)


def unit_degrees(degrees: np.ndarray, schema: "Schema | None") -> tuple[np.ndarray, np.ndarray]:
    """(input unit degrees [I], output unit degrees [U]): each unit carries its dimension's."""
    if schema is None:
        return degrees, degrees
    return degrees[schema.input_unit_dims], degrees[schema.output_unit_dims]


def input_degrees(ordering: np.ndarray) -> np.ndarray:
    """[D] int: 1-based position of every dimension in ``ordering``."""
    degrees = np.empty(len(ordering), dtype=np.int64)
    degrees[ordering] = np.arange(1, len(ordering) + 1)
    return degrees


def hidden_degrees(
    previous: np.ndarray, size: int, dim: int, rng: np.random.Generator
) -> np.ndarray:
    """[size] int degrees drawn uniformly from [min(previous), D - 1], as in the paper."""
    low = min(int(previous.min()), dim - 1)
    return rng.integers(low, dim, size=size, dtype=np.int64)


def hidden_mask(out_degrees: np.ndarray, in_degrees: np.ndarray) -> np.ndarray:
    """[out, in] bool: a hidden unit sees units of degree at most its own."""
    return out_degrees[:, None] >= in_degrees[None, :]


def output_mask(out_degrees: np.ndarray, in_degrees: np.ndarray) -> np.ndarray:
    """[out, in] bool: an output unit sees only units of degree strictly below its own."""
    return out_degrees[:, None] > in_degrees[None, :]


def member_orderings(
    num_members: int, dim: int, mode: OrderingMode, rng: np.random.Generator
) -> np.ndarray:
    """[K, D] orderings: random per member, natural (raster) for all, or natural for member 0."""
    natural = np.arange(dim, dtype=np.int64)
    orders = [
        natural.copy()
        if mode == "natural" or (mode == "natural-first" and k == 0)
        else rng.permutation(dim)
        for k in range(num_members)
    ]
    return np.stack(orders).astype(np.int64)


def draw_pool(
    num_members: int, dim: int, hidden_sizes: list[int], mode: OrderingMode, seed: int
) -> MaskPool:
    """Draw K orderings and connectivities from one seed, so a pool is reproducible."""
    if dim < 2:
        raise ValueError(f"MADE needs at least 2 dimensions, got D={dim}")
    rng = np.random.default_rng(seed)
    orderings = member_orderings(num_members, dim, mode, rng)
    layers: list[np.ndarray] = []
    for size in hidden_sizes:
        per_member = []
        for k in range(num_members):
            previous = layers[-1][k] if layers else input_degrees(orderings[k])
            per_member.append(hidden_degrees(previous, size, dim, rng))
        layers.append(np.stack(per_member))
    return MaskPool(orderings=orderings, hidden_degrees=tuple(layers))
