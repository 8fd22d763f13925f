"""Exact ancestral sampling of MADE members under a schema, with optional clamped entries.

Step t draws the dimension at position t of each member's ordering by inverting its conditional
CDF at the uniform of column t (``Schema.draw``); the first hidden layer's pre-activations are
updated by the drawn value's input units only, so a step costs the output units of one
dimension, not a forward pass. With one hidden layer (the presets) each member's hidden units
are sorted by degree once, so that step t reads only the units it may (degree <= t), and each
unit is computed once, at the step its degree is reached, from the inputs drawn by then (a
whole sample costs one first-layer product); and all members step together, so that one draw
serves every row when the dimensions they draw are alike. Given
entries are kept, and their conditionals summed into the log importance weight, as the binary
sampler does: the same ``draw`` interface serves samples, completions and the importance-sampling
estimators.
"""

import itertools
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from service.contract.sampler import MemberNet, MixtureSampling, ready_layout
from service.contract.schema import Dimension, Schema

_BLAS = ThreadpoolController()


def draw_kind(dimension: Dimension) -> tuple:
    """What ``Schema.draw`` reads of a dimension: dimensions of one kind draw alike (a real
    number's draw is in its column's units, so its standardization counts)."""
    return (
        dimension.family,
        dimension.levels,
        getattr(dimension, "components", 0),
        getattr(dimension, "mean", 0.0),
        getattr(dimension, "scale", 1.0),
    )


@dataclass(frozen=True)
class SortedLayer:
    """One member's single hidden layer, its units sorted by degree."""

    in_weight: np.ndarray  # [I, H]: input unit -> hidden unit
    bias: np.ndarray  # [H]
    out_weight: np.ndarray  # [U, H]
    # [D]: the units of degree <= t, which the output at position t may read and which input t
    # no longer changes.
    ready: np.ndarray


def sorted_layer(net: MemberNet, schema: Schema) -> SortedLayer:
    """Sort the hidden units by the degree their masked weights show: the position after the last
    dimension a unit reads (0 if none), at most its drawn degree, so every output that reads a
    unit still comes after all the unit reads."""
    weight, bias = net.hidden[0]
    position = np.empty(schema.dim, dtype=np.int64)
    position[net.ordering] = np.arange(schema.dim)
    reads = weight != 0  # [H, I]
    unit_positions = np.where(reads, position[schema.input_unit_dims][None, :] + 1, 0)
    degrees = unit_positions.max(axis=1)
    order = np.argsort(degrees, kind="stable")
    ready = np.searchsorted(degrees[order], np.arange(schema.dim), side="right")
    return SortedLayer(
        np.ascontiguousarray(weight[order].T),
        bias[order],
        np.ascontiguousarray(net.out_weight[:, order]),
        ready,
    )


class SchemaSampler(MixtureSampling):
    """Exact sampling for a pool of members of one schema."""

    def __init__(self, nets: list[MemberNet], schema: Schema):
        self.nets = nets
        self.schema = schema
        self.dim = schema.dim
        self.layers = (
            [sorted_layer(net, schema) for net in nets] if len(nets[0].hidden) == 1 else None
        )

    def draw(
        self, members: np.ndarray, given: np.ndarray, uniforms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row i from member ``members[i]``: x [n, D] float32 levels (given entries kept) and the
        log importance weight [n], the sum of log p(x_d | x_<d) over the given entries."""
        n = len(given)
        x = np.zeros((n, self.dim), dtype=np.float32)
        log_weight = np.zeros(n, dtype=np.float64)
        # Small products: one BLAS thread, as in the binary sampler.
        with _BLAS.limit(limits=1, user_api="blas"):
            if self.layers is not None:
                return self._lockstep(self.layers, members, given, uniforms)
            for k in np.unique(members):
                rows = np.flatnonzero(members == k)
                x[rows], log_weight[rows] = self._member(
                    self.nets[int(k)], given[rows], uniforms[rows]
                )
        return x, log_weight

    def _step(
        self,
        d: int,
        params: np.ndarray,
        uniforms: np.ndarray,
        given: np.ndarray,
        observed: np.ndarray,
        log_weight: np.ndarray,
    ) -> np.ndarray:
        """Draw dimension d from its output units (kept where given, whose conditional joins the
        log weight)."""
        drawn = self.schema.draw(d, params, uniforms)
        value = self._kept(d, drawn, given, observed)
        if value is not drawn:
            log_weight += self._given_log_prob(d, params, value, observed)
        return value

    def _lockstep(
        self,
        layers: list[SortedLayer],
        members: np.ndarray,
        given: np.ndarray,
        uniforms: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One hidden layer: every member's rows step together, so that when the dimensions the
        members draw at step t have the same family and size (a grey-level image's pixels do),
        one ``Schema.draw`` serves them all."""
        schema = self.schema
        n = len(given)
        owners = [int(k) for k in np.unique(members)]
        rows = [np.flatnonzero(members == k) for k in owners]
        bounds = np.cumsum([0, *map(len, rows)])
        parts = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        grouped = np.concatenate(rows)
        given, uniforms = given[grouped], uniforms[grouped]
        observed = ~np.isnan(given)
        x = np.zeros((n, self.dim), dtype=np.float32)
        encoded = np.zeros((n, schema.input_units), dtype=np.float32)
        log_weight = np.zeros(n, dtype=np.float64)
        # The rectified units, each computed once, when its degree is reached: it then reads
        # only drawn dimensions, so one small product over the inputs drawn so far gives it.
        final = [
            np.zeros((len(r), len(layers[k].bias)), dtype=np.float32)
            for k, r in zip(owners, rows, strict=True)
        ]
        kinds = [draw_kind(d) for d in schema.dimensions]
        for t in range(self.dim):
            dims = [int(self.nets[k].ordering[t]) for k in owners]
            params = []
            for g, k in enumerate(owners):
                d, layer, net = dims[g], layers[k], self.nets[k]
                units = slice(schema.output_offsets[d], schema.output_offsets[d + 1])
                ready, done = int(layer.ready[t]), int(layer.ready[t - 1]) if t else 0
                if ready > done:
                    pre = (
                        encoded[parts[g]] @ layer.in_weight[:, done:ready] + layer.bias[done:ready]
                    )
                    np.maximum(pre, 0.0, out=final[g][:, done:ready])
                out = final[g][:, :ready] @ layer.out_weight[units, :ready].T + net.out_bias[units]
                if net.direct is not None:
                    out = out + encoded[parts[g]] @ net.direct[units].T
                params.append(out)
            if len({kinds[d] for d in dims}) == 1:
                values = schema.draw(dims[0], np.concatenate(params), uniforms[:, t])
                drawn = [values[part] for part in parts]
            else:
                drawn = [
                    schema.draw(d, p, uniforms[part, t])
                    for d, p, part in zip(dims, params, parts, strict=True)
                ]
            for d, part, draws, out in zip(dims, parts, drawn, params, strict=True):
                value = self._kept(d, draws, given[part], observed[part])
                if value is not draws:
                    log_weight[part] += self._given_log_prob(d, out, value, observed[part])
                x[part, d] = value
                inputs = slice(schema.input_offsets[d], schema.input_offsets[d + 1])
                encoded[part, inputs] = schema.encode_dimension(d, value)
        out_x = np.empty_like(x)
        out_w = np.empty_like(log_weight)
        out_x[grouped], out_w[grouped] = x, log_weight
        return out_x, out_w

    @staticmethod
    def _kept(d: int, value: np.ndarray, given: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """The drawn values, with the given entries of dimension d in their place."""
        seen = observed[:, d]
        return np.where(seen, given[:, d], value) if seen.any() else value

    def _given_log_prob(
        self, d: int, params: np.ndarray, value: np.ndarray, observed: np.ndarray
    ) -> np.ndarray:
        """[n] log p(x_d | x_<d) of the given entries of dimension d (0 elsewhere)."""
        seen = observed[:, d]
        terms = np.zeros(len(value))
        terms[seen] = self.schema.dimension_log_prob(d, params[seen], value[seen])
        return terms

    def _member(
        self, net: MemberNet, given: np.ndarray, uniforms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        schema = self.schema
        n = len(given)
        x = np.zeros((n, self.dim), dtype=np.float32)
        encoded = np.zeros((n, schema.input_units), dtype=np.float32)
        log_weight = np.zeros(n, dtype=np.float64)
        observed = ~np.isnan(given)
        pre = None
        if net.hidden:
            first_weight, first_bias = net.hidden[0]
            pre = np.broadcast_to(first_bias, (n, first_bias.shape[0])).copy()
            input_dims = np.repeat(np.arange(self.dim), np.diff(schema.input_offsets))
            deeper = DeeperUnits(net, input_dims, n)
        for t, d in enumerate(net.ordering):
            units = slice(schema.output_offsets[d], schema.output_offsets[d + 1])
            if pre is None:
                params = encoded @ net.out_weight[units].T
            else:
                params = deeper.last_layer(pre, t) @ net.out_weight[units].T
            params = params + net.out_bias[units]
            if net.direct is not None:
                params = params + encoded @ net.direct[units].T
            value = self._step(int(d), params, uniforms[:, t], given, observed, log_weight)
            x[:, d] = value
            inputs = slice(schema.input_offsets[d], schema.input_offsets[d + 1])
            encoded[:, inputs] = schema.encode_dimension(int(d), value)
            if pre is not None:
                pre += encoded[:, inputs] @ first_weight[:, inputs].T
        return x, log_weight


class DeeperUnits:
    """The hidden layers after the first, filled in step by step during ancestral sampling.

    Each unit is computed once, at its ready step (``sampler.ready_layout``), so a draw costs one
    forward pass instead of one per dimension; units not yet computed hold 0, and nothing final
    reads them (their weights are masked to 0).

    input_dims: the dimension each first-layer input unit encodes.
    """

    def __init__(self, net: MemberNet, input_dims: np.ndarray, rows: int):
        self.layers = net.hidden[1:]
        self.layout = ready_layout(net, input_dims)
        self.values = [np.zeros((rows, len(bias)), np.float32) for _, bias in self.layers]

    def last_layer(self, first_pre: np.ndarray, t: int) -> np.ndarray:
        """The last hidden layer's activations at step t, from the first layer's
        pre-activations [n, H1] (final for every unit ready by t)."""
        h = np.maximum(first_pre, 0.0)
        for layer, ((weight, bias), values) in enumerate(
            zip(self.layers, self.values, strict=True)
        ):
            order, bounds = self.layout[layer + 1]
            units = order[bounds[t] : bounds[t + 1]]
            if len(units):
                values[:, units] = np.maximum(h @ weight[units].T + bias[units], 0.0)
            h = values
        return h
