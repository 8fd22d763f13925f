"""Exact ancestral sampling of MADE members under a schema, with optional clamped entries.

Member by member, step t draws the dimension at position t of the member's ordering by inverting
its conditional CDF at the uniform of column t (``Schema.draw``); the first hidden layer's
pre-activations are updated by the drawn value's input units only, so a step costs the output
units of one dimension, not a forward pass. Given entries are kept, and their conditionals summed
into the log importance weight, as the binary sampler does: the same ``draw`` interface serves
samples, completions and the importance-sampling estimators.
"""

import numpy as np
from threadpoolctl import ThreadpoolController

from service.contract.sampler import MemberNet
from service.contract.schema import Schema

_BLAS = ThreadpoolController()


class SchemaSampler:
    """Exact sampling for a pool of members of one schema."""

    def __init__(self, nets: list[MemberNet], schema: Schema):
        self.nets = nets
        self.schema = schema
        self.dim = schema.dim

    def sample_mixture(
        self, weights: np.ndarray, num_samples: int, rng: np.random.Generator
    ) -> np.ndarray:
        """[n, D] exact mixture samples: a member by its weight, then ancestral sampling."""
        members = rng.choice(len(weights), size=num_samples, p=weights)
        uniforms = rng.random((num_samples, self.dim))
        given = np.full((num_samples, self.dim), np.nan, dtype=np.float32)
        return self.draw(members, given, uniforms)[0]

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
            for k in np.unique(members):
                rows = np.flatnonzero(members == k)
                x[rows], log_weight[rows] = self._member(
                    self.nets[int(k)], given[rows], uniforms[rows]
                )
        return x, log_weight

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
        for t, d in enumerate(net.ordering):
            units = slice(schema.output_offsets[d], schema.output_offsets[d + 1])
            if pre is None:
                params = encoded @ net.out_weight[units].T
            else:
                h = np.maximum(pre, 0.0)
                for weight, bias in net.hidden[1:]:
                    h = np.maximum(h @ weight.T + bias, 0.0)
                params = h @ net.out_weight[units].T
            params = params + net.out_bias[units]
            if net.direct is not None:
                params = params + encoded @ net.direct[units].T
            value = schema.draw(int(d), params, uniforms[:, t])
            seen = observed[:, d]
            if seen.any():
                value = np.where(seen, given[:, d], value)
                chosen = schema.level_log_probs(int(d), params[seen])
                log_weight[seen] += chosen[np.arange(int(seen.sum())), value[seen].astype(int)]
            x[:, d] = value
            inputs = slice(schema.input_offsets[d], schema.input_offsets[d + 1])
            encoded[:, inputs] = schema.encode_dimension(int(d), value)
            if pre is not None:
                pre += encoded[:, inputs] @ first_weight[:, inputs].T
        return x, log_weight
