"""Exact ancestral sampling of MADE members, with optional clamped (observed) entries.

Nets with at most one hidden layer (every preset) run in *position space*: each member's weights
are permuted to its ordering, so step t samples the member's t-th dimension. A hidden unit of
degree m reads only inputs of degree <= m and output t reads only units of degree <= t, so the
positions are cut into blocks: at a block's start two matrix products give the block's outputs
and its hidden units (those of degree inside the block) everything from the final units and the
sampled prefix, and a compiled loop then runs the block's steps with only those few units. A step
is a comparison of a logit with the precomputed threshold logit(u); clamped entries get -inf or
+inf and their conditionals are summed afterwards into an importance weight, which makes the same
routine the proposal of the importance-sampling estimators. Deeper nets use the incremental
sampler (``DeepNet``): the first layer moves by one column per step and each deeper unit is
computed once, at the step its inputs become final, so a draw costs about one forward pass.
"""

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from service.contract.bernoulli import bernoulli_log_prob
from service.contract.masks import MaskPool
from service.contract.schema import Schema

BLOCK = 32  # positions per block: small enough for cheap steps, large enough for good products
_BLAS = ThreadpoolController()


@dataclass(frozen=True)
class MemberNet:
    """One member's masked weights, float32. Without hidden layers ``out_weight`` reads x."""

    ordering: np.ndarray  # [D]
    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight [out, in], bias [out]) per layer
    out_weight: np.ndarray  # [U, H_last] (or [U, I] without hidden layers); U = I = D if binary
    out_bias: np.ndarray  # [U]
    direct: np.ndarray | None  # [U, I]


def member_nets(
    pool: MaskPool,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    direct_weight: np.ndarray | None,
    schema: Schema | None = None,
) -> list[MemberNet]:
    """Apply each member's masks (derived from its degrees, and the schema's units) to the
    shared weights."""
    nets = []
    for k in range(pool.num_members):
        masks = pool.layer_masks(k, schema)
        masked = [(w * m).astype(np.float32) for w, m in zip(weights, masks, strict=True)]
        nets.append(
            MemberNet(
                ordering=pool.orderings[k],
                hidden=tuple(
                    (w, b.astype(np.float32)) for w, b in zip(masked[:-1], biases[:-1], strict=True)
                ),
                out_weight=masked[-1],
                out_bias=biases[-1].astype(np.float32),
                direct=(direct_weight * pool.direct_mask(k, schema)).astype(np.float32)
                if direct_weight is not None
                else None,
            )
        )
    return nets


@dataclass(frozen=True)
class SamplerPlan:
    """Members' weights laid out for blocked sampling, stacked over K (one hidden layer at most).

    Sources are the inputs the outputs read, in the order they become final: a constant 1 (the
    bias), then per block the block's hidden units (padded to the same count in every member)
    followed by the block's inputs. Block b covers positions ``starts[b]:starts[b + 1]``.
    """

    orderings: np.ndarray  # [K, D]
    starts: np.ndarray  # [B + 1] first position of each block, then D
    rows: np.ndarray  # [B + 1] first source row of each block, then the number of sources R
    slots: np.ndarray  # [B + 1] first hidden slot of each block, then the number of slots U
    to_out: np.ndarray  # [K, R, D] source -> output logit weights
    to_hidden: np.ndarray  # [K, 1 + D, U] (bias, inputs in position order) -> hidden slot
    ready: np.ndarray  # [K, D] hidden slots of position t's block with degree <= t


def sampler_plan(nets: list[MemberNet]) -> SamplerPlan | None:
    """Lay every member's masked weights out for blocked sampling once, at load time.

    None for nets with several hidden layers, which the incremental sampler handles.
    """
    if len(nets[0].hidden) > 1:
        return None
    dim = len(nets[0].ordering)
    starts = np.append(np.arange(0, dim, BLOCK), dim)
    members = [_position_space(net) for net in nets]
    widths = [
        max(int(((d > a) & (d <= b)).sum()) for _, _, d, _ in members)
        for a, b in itertools.pairwise(starts)
    ]
    sizes = np.diff(starts)
    rows = np.concatenate([[1], 1 + np.cumsum(np.add(widths, sizes))])
    slots = np.concatenate([[0], np.cumsum(widths)])
    to_out = np.zeros((len(nets), rows[-1], dim), np.float32)
    to_hidden = np.zeros((len(nets), 1 + dim, slots[-1]), np.float32)
    ready = np.zeros((len(nets), dim), np.int64)
    for k, (out_bias, hidden, degrees, from_x) in enumerate(members):
        to_out[k, 0] = out_bias
        for b, (a, z) in enumerate(itertools.pairwise(starts)):
            units = np.flatnonzero((degrees > a) & (degrees <= z))
            units = units[np.argsort(degrees[units], kind="stable")]
            r, s = rows[b], slots[b]
            if hidden is not None:
                weight, bias, out_weight = hidden
                to_out[k, r : r + len(units)] = out_weight[:, units].T
                to_hidden[k, 0, s : s + len(units)] = bias[units]
                to_hidden[k, 1:, s : s + len(units)] = weight[units].T
            to_out[k, r + widths[b] : rows[b + 1]] = from_x[:, a:z].T
            ready[k, a:z] = (degrees[units][None, :] <= np.arange(a, z)[:, None]).sum(axis=1)
    return SamplerPlan(
        np.stack([net.ordering for net in nets]), starts, rows, slots, to_out, to_hidden, ready
    )


def _position_space(
    net: MemberNet,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None, np.ndarray, np.ndarray]:
    """(output bias, (first layer weight, bias, output weight) or None, hidden degrees, the
    weights from inputs to outputs [D out, D in]), all indexed by position."""
    order = net.ordering
    dim = len(order)
    from_x = np.zeros((dim, dim), np.float32)
    if net.direct is not None:
        from_x += net.direct[order][:, order]
    if not net.hidden:
        from_x += net.out_weight[order][:, order]
        return net.out_bias[order], None, np.zeros(0, np.int64), from_x
    weight, bias = net.hidden[0]
    weight = weight[:, order]
    degrees = _unit_degrees(weight)
    return net.out_bias[order], (weight, bias, net.out_weight[order]), degrees, from_x


def _unit_degrees(weight: np.ndarray) -> np.ndarray:
    """Degree of each hidden unit as the highest input position + 1 it reads (1 if none).

    Recovered from the masked weights [H, D by position]: at most the unit's drawn degree, so
    every output that reads the unit still comes after all the unit reads.
    """
    reads = weight != 0
    last = np.where(reads.any(axis=1), weight.shape[1] - np.argmax(reads[:, ::-1], axis=1), 1)
    return last.astype(np.int64)


# A deep net draws this many activations' worth of rows at a time (4 MB of float32): they stay in
# cache for wide layers, while narrow nets still take many rows per numpy call.
CHUNK_ACTIVATIONS = 1 << 20


@dataclass(frozen=True)
class DeepNet:
    """A member with several hidden layers, laid out in position space for ancestral sampling.

    Each layer's units are sorted by their ready step (``ready_layout``), so at step t the final
    units of every layer are a prefix: step t computes only the units that become ready at t,
    each once, from the final prefix below; output t reads the last layer's final prefix and the
    inputs before t; and drawing input t moves only the first-layer units not yet final. A draw
    then costs about one forward pass, in slices that need no copies.
    """

    ordering: np.ndarray  # [D]
    first: np.ndarray  # [D, H1] input position -> first-layer unit
    first_bias: np.ndarray  # [H1]
    deeper: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight [H_l, H_l-1], bias [H_l])
    out: np.ndarray  # [D, H_L] output position <- last-layer unit
    out_bias: np.ndarray  # [D]
    direct: np.ndarray | None  # [D, D] output position <- input position
    bounds: tuple[np.ndarray, ...]  # per layer [D + 2]: units ready at t are bounds[t]:bounds[t+1]


def deep_net(net: MemberNet) -> DeepNet:
    """Lay one deep member out once (at load time for a Sampler)."""
    order = net.ordering
    sorts, bounds = zip(*ready_layout(net, np.arange(len(order))), strict=True)
    weight, bias = net.hidden[0]
    return DeepNet(
        ordering=order,
        first=np.ascontiguousarray(weight[sorts[0]][:, order].T),
        first_bias=bias[sorts[0]],
        deeper=tuple(
            (np.ascontiguousarray(w[sorts[i + 1]][:, sorts[i]]), b[sorts[i + 1]])
            for i, (w, b) in enumerate(net.hidden[1:])
        ),
        out=np.ascontiguousarray(net.out_weight[order][:, sorts[-1]]),
        out_bias=net.out_bias[order],
        direct=None if net.direct is None else np.ascontiguousarray(net.direct[order][:, order]),
        bounds=bounds,
    )


def ready_layout(net: MemberNet, input_dims: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, its units sorted by the step at which each is final, and bounds [D + 2]
    such that the units ready at step t are ``sort[bounds[t] : bounds[t + 1]]``.

    A unit is ready at the latest ready step of what its masked weights read, an input one step
    after its dimension's position (0 for a unit that reads nothing). input_dims: the dimension
    each input unit encodes.
    """
    ready = 1 + np.argsort(net.ordering)[input_dims]
    layout = []
    for weight, _ in net.hidden:
        ready = np.where(weight != 0, ready, 0).max(axis=1, initial=0)
        sort = np.argsort(ready, kind="stable")
        layout.append((sort, np.searchsorted(ready[sort], np.arange(len(net.ordering) + 2))))
    return layout


class MixtureSampling(ABC):
    """Mixture samples from a sampler's ``draw``: the binary and the schema sampler share it."""

    dim: int

    @abstractmethod
    def draw(
        self, members: np.ndarray, given: np.ndarray, uniforms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row i from member ``members[i]``, given entries kept: x [n, D] and log weights [n]."""

    def sample_mixture(
        self, weights: np.ndarray, num_samples: int, rng: np.random.Generator
    ) -> np.ndarray:
        """[n, D] exact mixture samples: a member by its weight [K] (summing to 1), then
        ancestral sampling in its ordering."""
        members = rng.choice(len(weights), size=num_samples, p=weights)
        uniforms = rng.random((num_samples, self.dim))
        given = np.full((num_samples, self.dim), np.nan, dtype=np.float32)
        return self.draw(members, given, uniforms)[0]


class Sampler(MixtureSampling):
    """Exact sampling for a whole pool, laid out once at load time.

    With at most one hidden layer the blocked plan holds everything, so the members' masked
    weights are not kept a second time (tens of MB for Fashion-MNIST models).
    """

    def __init__(self, nets: list[MemberNet]):
        self.plan = sampler_plan(nets)
        self._deep = [deep_net(net) for net in nets] if self.plan is None else []
        self.dim = len(nets[0].ordering)

    def draw(
        self, members: np.ndarray, given: np.ndarray, uniforms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row i from member ``members[i]``; arrays and semantics as in ``ancestral``."""
        return ancestral_members(self._deep, self.plan, members, given, uniforms)


def ancestral(
    net: MemberNet, given: np.ndarray, uniforms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sample missing entries in the member's ordering, keeping the given ones.

    given: [n, D] float32, NaN where missing. uniforms: [n, D] in [0, 1), column t used at
    position t of the ordering. Returns x [n, D] float32 in {0, 1} and the log importance weight
    [n] float64: the sum of log p(x_d | x_<d) over the given entries (0 when none are given).
    """
    members = np.zeros(len(given), dtype=np.int64)
    plan = sampler_plan([net])
    deep = [deep_net(net)] if plan is None else []
    return ancestral_members(deep, plan, members, given, uniforms)


def ancestral_members(
    deep: list[DeepNet],
    plan: SamplerPlan | None,
    members: np.ndarray,
    given: np.ndarray,
    uniforms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``ancestral`` for many members at once: row i is drawn from member ``members[i]``.

    plan: ``sampler_plan(nets)``, made once; where it is None (deep nets), ``deep`` holds
    ``deep_net`` of every member. Same arrays and semantics as ``ancestral``.
    """
    # The products are small: more than one BLAS thread only fights onnxruntime's threads for
    # the cores (measured 20x slower on 2 shared cores).
    with _BLAS.limit(limits=1, user_api="blas"):
        return _ancestral_members(deep, plan, members, given, uniforms)


def _ancestral_members(
    deep: list[DeepNet],
    plan: SamplerPlan | None,
    members: np.ndarray,
    given: np.ndarray,
    uniforms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    n, dim = given.shape
    x = np.zeros((n, dim), dtype=np.float32)
    log_weight = np.zeros(n, dtype=np.float64)
    groups = [(int(k), np.flatnonzero(members == k)) for k in np.unique(members)]
    if plan is None:
        for k, rows in groups:
            order = deep[k].ordering
            x_pos, log_weight[rows] = _deep(deep[k], given[rows][:, order], uniforms[rows])
            x[rows[:, None], order[None, :]] = x_pos
        return x, log_weight
    if n == 0:
        return x, log_weight
    owner = np.array([k for k, _ in groups])
    counts = np.array([len(rows) for _, rows in groups])
    slot = np.repeat(np.arange(len(groups)), counts)
    rank = np.concatenate([np.arange(c) for c in counts])
    order_rows = np.concatenate([rows for _, rows in groups])
    orders = plan.orderings[owner[slot]]  # [n] orderings of the rows in group order
    given_rows = np.take_along_axis(given[order_rows], orders, axis=1)
    threshold = np.zeros((len(groups), int(counts.max()), dim), dtype=np.float32)
    threshold[slot, rank] = _thresholds(given_rows, uniforms[order_rows])
    x_pos, logits = _blocked(plan, owner, counts, threshold)
    x_rows = x_pos[slot, rank]
    placed = np.empty_like(x_rows)
    np.put_along_axis(placed, orders, x_rows, axis=1)
    x[order_rows] = placed
    observed = ~np.isnan(given_rows)
    if observed.any():
        terms = np.where(observed, bernoulli_log_prob(x_rows, logits[slot, rank]), 0.0)
        log_weight[order_rows] = terms.sum(axis=1)
    return x, log_weight


def _thresholds(given: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """float32 logit(u), so that x = [logit > threshold] is x = [u < sigmoid(logit)].

    Given entries become -inf (always 1) or +inf (always 0), which clamps them in the same compare.
    """
    u = uniforms.astype(np.float32)  # moves u by < 1e-7, far inside the 1e-4 tolerance
    with np.errstate(divide="ignore"):
        threshold = np.log(u) - np.log1p(-u)
    threshold[given == 1] = -np.inf
    threshold[given == 0] = np.inf
    return threshold


def _blocked(
    plan: SamplerPlan, owner: np.ndarray, counts: np.ndarray, threshold: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Blocked sampling in position space: threshold [G, m, D] -> x [G, m, D] and logits.

    The first ``counts[g]`` rows of group g are drawn from member ``owner[g]``; other rows are
    padding and stay zero.
    """
    groups, width, dim = threshold.shape
    sources = np.zeros((groups, width, plan.rows[-1]), np.float32)
    sources[:, :, 0] = 1.0
    inputs = np.zeros((groups, width, 1 + dim), np.float32)  # [1, x by position]
    inputs[:, :, 0] = 1.0
    logits = np.zeros((groups, width, dim), np.float32)
    for b in range(len(plan.starts) - 1):
        t0, t1 = int(plan.starts[b]), int(plan.starts[b + 1])
        r0, r1 = int(plan.rows[b]), int(plan.rows[b + 1])
        s0, s1 = int(plan.slots[b]), int(plan.slots[b + 1])
        first = s1 - s0
        out_base = np.zeros((groups, width, t1 - t0), np.float32)
        hidden = np.zeros((groups, width, first), np.float32)
        for g, k in enumerate(owner):
            n = counts[g]
            np.matmul(sources[g, :n, :r0], plan.to_out[k, :r0, t0:t1], out=out_base[g, :n])
            np.matmul(
                inputs[g, :n, : 1 + t0], plan.to_hidden[k, : 1 + t0, s0:s1], out=hidden[g, :n]
            )
        state = np.zeros((groups, width, r1 - r0), np.float32)  # [block units, block inputs]
        state[:, :, :first] = hidden
        step = np.ascontiguousarray(plan.to_out[owner, r0:r1, t0:t1].transpose(0, 2, 1))
        rise = np.ascontiguousarray(plan.to_hidden[owner, 1 + t0 : 1 + t1, s0:s1])
        ready = plan.ready[owner, t0:t1]
        _block_steps(state, rise, step, ready, out_base, threshold, counts, t0, logits)
        np.maximum(state[:, :, :first], 0.0, out=sources[:, :, r0 : r0 + first])
        sources[:, :, r0 + first : r1] = state[:, :, first:]
        inputs[:, :, 1 + t0 : 1 + t1] = state[:, :, first:]
    return inputs[:, :, 1:], logits


@numba.njit(cache=True, nogil=True, fastmath=True)
def _block_steps(
    state: np.ndarray,
    rise: np.ndarray,
    step: np.ndarray,
    ready: np.ndarray,
    out_base: np.ndarray,
    threshold: np.ndarray,
    counts: np.ndarray,
    t0: int,
    logits: np.ndarray,
) -> None:
    """The steps of one block, compiled; rows are independent, so each runs all its steps.

    state [G, m, first + size] holds the block's hidden pre-activations then its inputs. Step j
    reads the units of degree <= t0 + j (the first ``ready[g, j]``, as units are sorted) and the
    inputs before j; setting input j moves only the units after those. Fast-math only reorders
    float32 sums, far inside the 1e-4 tolerance of exactness.
    """
    first = rise.shape[2]
    for g in range(state.shape[0]):
        for i in range(counts[g]):
            row = state[g, i]
            for j in range(rise.shape[1]):
                weight = step[g, j]
                logit = out_base[g, i, j]
                for c in range(ready[g, j]):
                    logit += max(row[c], np.float32(0.0)) * weight[c]
                for c in range(first, first + j):
                    logit += row[c] * weight[c]
                logits[g, i, t0 + j] = logit
                if logit > threshold[g, i, t0 + j]:
                    up = rise[g, j]
                    for c in range(ready[g, j], first):
                        row[c] += up[c]
                    row[first + j] = 1.0


def _deep(net: DeepNet, given: np.ndarray, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ancestral`` for a deep member, in position space: given [n, D] by position."""
    n, dim = given.shape
    x = np.zeros((n, dim), dtype=np.float32)
    log_weight = np.zeros(n, dtype=np.float64)
    widths = len(net.first_bias) + sum(len(bias) for _, bias in net.deeper)
    chunk = max(1, CHUNK_ACTIVATIONS // widths)
    for a in range(0, n, chunk):
        rows = slice(a, a + chunk)
        x[rows], log_weight[rows] = _deep_rows(net, given[rows], uniforms[rows])
    return x, log_weight


def _deep_rows(
    net: DeepNet, given: np.ndarray, uniforms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n, dim = given.shape
    x = np.zeros((n, dim), dtype=np.float32)
    log_weight = np.zeros(n, dtype=np.float64)
    observed = ~np.isnan(given)
    pre = np.broadcast_to(net.first_bias, (n, len(net.first_bias))).copy()
    layers = [np.zeros_like(pre)] + [np.zeros((n, len(b)), np.float32) for _, b in net.deeper]
    first = net.bounds[0]
    for t in range(dim):
        np.maximum(pre[:, first[t] : first[t + 1]], 0.0, out=layers[0][:, first[t] : first[t + 1]])
        for i, (weight, bias) in enumerate(net.deeper):
            below, now = net.bounds[i][t + 1], net.bounds[i + 1]
            if now[t + 1] > now[t]:
                units = slice(now[t], now[t + 1])
                product = layers[i][:, :below] @ weight[units, :below].T + bias[units]
                np.maximum(product, 0.0, out=layers[i + 1][:, units])
        final = net.bounds[-1][t + 1]
        logit = layers[-1][:, :final] @ net.out[t, :final] + net.out_bias[t]
        if net.direct is not None:
            logit = logit + x[:, :t] @ net.direct[t, :t]
        logit = logit.astype(np.float64)
        sampled = uniforms[:, t] < 1.0 / (1.0 + np.exp(-logit))
        value = np.where(observed[:, t], given[:, t], sampled).astype(np.float32)
        if observed[:, t].any():
            log_weight += np.where(observed[:, t], bernoulli_log_prob(value, logit), 0.0)
        x[:, t] = value
        pre[:, first[t + 1] :] += value[:, None] * net.first[t, first[t + 1] :]
    return x, log_weight
