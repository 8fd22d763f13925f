"""The per-dimension schema (manifest version 2): each dimension's family and what it needs.

Families: ``bernoulli`` (0/1), ``categorical`` (C unordered classes, optionally labelled),
``ordinal`` (levels 0..L-1, a discretized logistic mixture of M components, Salimans et al. 2017)
and ``gaussian_mixture`` (a real number, a mixture of M Gaussians on the column standardized by
its training mean and scale: MADE MoG, Papamakarios et al. 2017). A dimension d has
``input_width`` units in the network's input (1, or C one-hot units for a categorical) and
``output_width`` units in its output (1 logit, C logits, or M mixture logits, M means and M
log-scales); every one of its units carries d's degree, so masks keep the autoregressive property
for any schema.

The numpy math here (float64) is the reference the trainer's torch loss, the graph and the sampler
are checked against. Values are floats [B, D]: a discrete dimension's level index, a continuous
one's value in the data's own units; NaN marks a missing entry. A continuous dimension's log
density is in the data's units: the standardization's log-Jacobian, -log scale, is included.
"""

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Log-scales of ordinal components are clamped: below, a bin's mass would not be resolvable
# (PixelCNN++'s clamp); above, a component spreads far past [-1, 1] and its bins' masses would
# underflow float32 differences.
MIN_LOG_SCALE = -7.0
MAX_LOG_SCALE = 7.0
# A real column's components are no narrower than e^-4 (1.8%) of its training scale. Narrower,
# the float32 graph's rounding of the standardized value and of the component's mean, divided by
# the component's width, moves log densities by more than the parity checks allow (a count column
# of randhie, modelled as spikes at its integers, measured 0.0057 nats at e^-7): the served
# densities would not be the trained ones.
GAUSSIAN_MIN_LOG_SCALE = -4.0
DEFAULT_COMPONENTS = 5


class _Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = Field(default=None, description="The column's name, when it has one.")


class Bernoulli(_Dimension):
    family: Literal["bernoulli"] = "bernoulli"

    @property
    def levels(self) -> int:
        return 2


class Categorical(_Dimension):
    family: Literal["categorical"] = "categorical"
    classes: int = Field(ge=2, description="C: values are 0..C-1, unordered.")
    labels: list[str] | None = Field(default=None, description="A label per class, in order.")

    @property
    def levels(self) -> int:
        return self.classes

    @model_validator(mode="after")
    def _labels_match(self) -> "Categorical":
        if self.labels is not None:
            if len(self.labels) != self.classes:
                raise ValueError(f"{len(self.labels)} labels for {self.classes} classes")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels repeat a label")
        return self


class Ordinal(_Dimension):
    family: Literal["ordinal"] = "ordinal"
    levels: int = Field(ge=2, description="L: values are 0..L-1, ordered (256 for 8-bit pixels).")
    components: int = Field(
        default=DEFAULT_COMPONENTS, ge=1, description="M, of the discretized logistic mixture."
    )


class GaussianMixture(_Dimension):
    family: Literal["gaussian_mixture"] = "gaussian_mixture"
    components: int = Field(default=DEFAULT_COMPONENTS, ge=1, description="M Gaussians.")
    mean: float = Field(
        default=0.0, description="The column's training mean: the network sees (x - mean) / scale."
    )
    scale: float = Field(default=1.0, gt=0, description="The column's training standard deviation.")

    @property
    def levels(self) -> int:
        """0: a real number has no levels."""
        return 0


Family = Bernoulli | Categorical | Ordinal | GaussianMixture
Dimension = Annotated[Family, Field(discriminator="family")]
DISCRETE_FAMILIES = ("bernoulli", "categorical", "ordinal")


@dataclass(frozen=True)
class Group:
    """Dimensions of one family and width, handled together: ``units[i]`` are dimension
    ``dims[i]``'s output units (for an ordinal: M logits, then M means, then M log-scales)."""

    family: str
    dims: np.ndarray  # [n]
    units: np.ndarray  # [n, width]
    levels: np.ndarray  # [n] (0 for a continuous dimension)
    # [n] each dimension's standardization, x = mean + scale * z (0 and 1 for discrete ones)
    means: np.ndarray
    scales: np.ndarray


class Schema:
    """A model's dimensions, with the index arrays that lay their units out."""

    def __init__(self, dimensions: list[Family]):
        if len(dimensions) < 2:
            raise ValueError(f"MADE needs at least 2 dimensions, got {len(dimensions)}")
        self.dimensions = tuple(dimensions)
        self.dim = len(dimensions)
        self.levels = np.array([d.levels for d in dimensions], dtype=np.int64)
        self.continuous = np.array([isinstance(d, GaussianMixture) for d in dimensions])
        self.means = np.array([getattr(d, "mean", 0.0) for d in dimensions])
        self.scales = np.array([getattr(d, "scale", 1.0) for d in dimensions])
        self.input_widths = np.array(
            [d.classes if isinstance(d, Categorical) else 1 for d in dimensions], dtype=np.int64
        )
        self.output_widths = np.array([output_width(d) for d in dimensions], dtype=np.int64)
        self.input_offsets = np.concatenate([[0], np.cumsum(self.input_widths)])
        self.output_offsets = np.concatenate([[0], np.cumsum(self.output_widths)])
        # The dimension each unit belongs to: masks give a unit its dimension's degree.
        self.input_unit_dims = np.repeat(np.arange(self.dim), self.input_widths)
        self.output_unit_dims = np.repeat(np.arange(self.dim), self.output_widths)
        self.groups = _groups(self)
        # Input unit u reads x[unit_dims[u]]: one-hot units (class >= 0) compare it with their
        # class, the others scale and shift it (an ordinal to [-1, 1], a real number standardized).
        classes, scales, shifts = [], [], []
        for d in dimensions:
            if isinstance(d, Categorical):
                classes += range(d.classes)
                scales += [0.0] * d.classes
                shifts += [0.0] * d.classes
            else:
                classes.append(-1)
                if isinstance(d, Ordinal):
                    scales.append(2.0 / (d.levels - 1))
                    shifts.append(-1.0)
                elif isinstance(d, GaussianMixture):
                    scales.append(1.0 / d.scale)
                    shifts.append(-d.mean / d.scale)
                else:
                    scales.append(1.0)
                    shifts.append(0.0)
        self.unit_classes = np.array(classes, dtype=np.int64)
        self.unit_scales = np.array(scales)
        self.unit_shifts = np.array(shifts)

    @property
    def has_continuous(self) -> bool:
        """Whether any dimension is a real number: then densities, not probabilities, and no
        bits per dimension."""
        return bool(self.continuous.any())

    @property
    def input_units(self) -> int:
        return int(self.input_offsets[-1])

    @property
    def output_units(self) -> int:
        return int(self.output_offsets[-1])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.dimensions == other.dimensions

    def __hash__(self) -> int:
        return hash(self.dimensions)

    def describe(self) -> str:
        """One line per family, for the trainer's start-up log and error messages."""
        counts: dict[str, int] = {}
        for d in self.dimensions:
            key = {
                "bernoulli": "bernoulli",
                "categorical": f"categorical C={getattr(d, 'classes', 0)}",
                "ordinal": f"ordinal L={d.levels} M={getattr(d, 'components', 0)}",
                "gaussian_mixture": f"gaussian_mixture M={getattr(d, 'components', 0)}",
            }[d.family]
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{n} {key}" for key, n in counts.items())

    def column(self, d: int) -> str:
        """How errors name dimension d: its index, and its name when it has one."""
        name = self.dimensions[d].name
        return f"{d} ({name!r})" if name else str(d)

    # -- values ------------------------------------------------------------------------------
    def first_invalid(
        self, rows: np.ndarray, allow_missing: bool = False
    ) -> tuple[int, int] | None:
        """(row, dimension) of the first entry that is not a level of its dimension, or for a
        continuous one not a finite number (NaN counts as missing, allowed or not); None when
        every entry is valid."""
        values = np.asarray(rows, dtype=np.float64)
        missing = np.isnan(values)
        with np.errstate(invalid="ignore"):
            level = (values == np.round(values)) & (values >= 0) & (values < self.levels)
            valid = np.where(self.continuous, np.isfinite(values), level)
        if allow_missing:
            valid |= missing
        if valid.all():
            return None
        row, col = np.argwhere(~valid)[0]
        return int(row), int(col)

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """[B, D] levels -> [B, I] network input: 0/1 as is, a categorical one-hot, an ordinal
        level scaled to [-1, 1]. Missing (NaN) entries encode as level 0; the masks keep any
        output from reading an entry that comes later in its ordering."""
        x = np.nan_to_num(np.asarray(rows, dtype=np.float64))[:, self.input_unit_dims]
        one_hot = self.unit_classes >= 0
        return np.where(one_hot, x == self.unit_classes, x * self.unit_scales + self.unit_shifts)

    def encode_dimension(self, d: int, values: np.ndarray) -> np.ndarray:
        """[n] values of dimension d -> [n, input width] float32: its slice of ``encode``."""
        units = slice(self.input_offsets[d], self.input_offsets[d + 1])
        one_hot = self.unit_classes[units] >= 0
        v = np.asarray(values, dtype=np.float64)[:, None]
        encoded = np.where(
            one_hot,
            v == self.unit_classes[units],
            v * self.unit_scales[units] + self.unit_shifts[units],
        )
        return encoded.astype(np.float32)

    def random_rows(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """[count, D] float32 rows of uniformly random levels (continuous entries: within 3
        scales of the mean), for parity checks."""
        u = rng.random((count, self.dim))
        levels = np.floor(u * self.levels)
        real = self.means + self.scales * (6.0 * u - 3.0)
        return np.where(self.continuous, real, levels).astype(np.float32)

    # -- densities ---------------------------------------------------------------------------
    def log_terms(self, params: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """[..., D] log p(x_d | x_<d) in nats from the output units ``params`` [..., U] and the
        rows [..., D] (broadcast against each other's leading axes), in float64."""
        params = np.asarray(params, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.float64)
        shape = np.broadcast_shapes(params.shape[:-1], rows.shape[:-1])
        out = np.zeros((*shape, self.dim))
        for group in self.groups:
            p = params[..., group.units]  # [..., n, width]
            x = rows[..., group.dims]
            out[..., group.dims] = _group_log_prob(group, p, x)
        return out

    def dimension_log_prob(self, d: int, params: np.ndarray, values: np.ndarray) -> np.ndarray:
        """[n] log p(x_d = values | x_<d) from dimension d's output units ``params`` [n, width]."""
        group = next(g for g in self.groups if d in g.dims)
        i = int(np.flatnonzero(group.dims == d)[0])
        one = Group(
            group.family,
            group.dims[i : i + 1],
            group.units[i : i + 1],
            group.levels[i : i + 1],
            group.means[i : i + 1],
            group.scales[i : i + 1],
        )
        x = np.asarray(values, dtype=np.float64)[:, None]
        return _group_log_prob(one, np.asarray(params, dtype=np.float64)[:, None, :], x)[:, 0]

    def level_log_probs(self, d: int, params: np.ndarray) -> np.ndarray:
        """[n, L_d] log p(x_d = v | x_<d) for every level v of a discrete dimension d, from its
        output units ``params`` [n, width]."""
        dimension = self.dimensions[d]
        params = np.asarray(params, dtype=np.float64)
        if isinstance(dimension, Bernoulli):
            z = params[:, 0]
            return np.stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)], axis=1)
        if isinstance(dimension, Categorical):
            return _log_softmax(params)
        if not isinstance(dimension, Ordinal):
            raise ValueError(f"dimension {self.column(d)} is continuous: it has no levels")
        levels = np.arange(dimension.levels, dtype=np.float64)
        m = dimension.components
        return discretized_logistic_log_prob(
            levels[None, :],
            params[:, None, :m],
            params[:, None, m : 2 * m],
            params[:, None, 2 * m :],
            dimension.levels,
        )

    def draw(self, d: int, params: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """[n] values of dimension d, a deterministic function of ``uniforms`` [n] in [0, 1):
        for a categorical, inversion of its CDF (the number of levels whose CDF is at most u).

        A Bernoulli is 1 when u < p(1), as in the binary sampler; an ordinal or a real number is
        drawn through its mixture (below): exactly from the same level probabilities, or density.
        """
        dimension = self.dimensions[d]
        params = np.asarray(params, dtype=np.float64)
        u = np.asarray(uniforms, dtype=np.float64)[:, None]
        if isinstance(dimension, Bernoulli):
            return (u[:, 0] < sigmoid(params[:, 0])) * 1.0
        if isinstance(dimension, Categorical):
            cdf = np.cumsum(np.exp(_log_softmax(params)), axis=1)
            cdf /= cdf[:, -1:]
            return (cdf[:, :-1] <= u).sum(axis=1).astype(np.float64)
        # A component by its weight, then the logistic (or Gaussian) by inversion of its CDF at
        # the same uniform rescaled to the component's share of [0, 1) (uniform again, given the
        # component), and for an ordinal the level whose bin holds the draw: O(M) a row.
        real = isinstance(dimension, GaussianMixture)
        floor = GAUSSIAN_MIN_LOG_SCALE if real else MIN_LOG_SCALE
        mean, scale, within = _component_draw(params, dimension.components, u[:, 0], floor)
        if real:
            # Imported here: only real columns need it, and scipy costs every server about
            # 0.3 s and 15 MB at start (make bench, row 6).
            from scipy.special import ndtri

            z = mean + scale * ndtri(within)
            # float32, as rows are stored: the value encoded for the next steps is the one kept.
            return (dimension.mean + dimension.scale * z).astype(np.float32)
        y = mean + scale * (np.log(within) - np.log1p(-within))
        # Level v takes (edge_{v-1}, edge_v], edge_v = -1 + (2 v + 1) h; the edge levels the tails.
        levels = dimension.levels
        half = 1.0 / (levels - 1.0)
        level = np.ceil((y - (half - 1.0)) / (2.0 * half))
        return np.clip(level, 0, levels - 1)


def _component_draw(
    params: np.ndarray, m: int, u: np.ndarray, min_log_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, uniform within) of the component that ``u`` [n] picks by the mixture weights
    of ``params`` [n, 3M] (M logits, M means, M raw log-scales, clamped below at
    ``min_log_scale``): the uniform rescaled to the component's share of [0, 1), uniform again
    given the component."""
    weights = np.exp(params[:, :m] - params[:, :m].max(axis=1, keepdims=True))
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    component = np.minimum((cumulative <= u[:, None]).sum(axis=1), m - 1)[:, None]
    lower = np.concatenate([np.zeros((len(u), 1)), cumulative[:, :-1]], axis=1)
    start = np.take_along_axis(lower, component, axis=1)[:, 0]
    share = np.take_along_axis(cumulative, component, axis=1)[:, 0] - start
    # (u past the last cumulative weight, by rounding, lands in the last component)
    within = np.clip((u - start) / np.maximum(share, 1e-300), 1e-12, 1 - 1e-12)
    mean = np.take_along_axis(params[:, m : 2 * m], component, axis=1)[:, 0]
    raw = np.take_along_axis(params[:, 2 * m :], component, axis=1)[:, 0]
    return mean, np.exp(np.clip(raw, min_log_scale, MAX_LOG_SCALE)), within


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without overflow for any z."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def output_width(dimension: Family) -> int:
    if isinstance(dimension, Categorical):
        return dimension.classes
    if isinstance(dimension, Ordinal | GaussianMixture):
        return 3 * dimension.components
    return 1


def _groups(schema: Schema) -> tuple[Group, ...]:
    """Dimensions grouped by (family, output width), in order of first appearance."""
    keys: dict[tuple[str, int], list[int]] = {}
    for d, dimension in enumerate(schema.dimensions):
        keys.setdefault((dimension.family, int(schema.output_widths[d])), []).append(d)
    groups = []
    for (family, width), dims in keys.items():
        index = np.array(dims, dtype=np.int64)
        units = schema.output_offsets[index][:, None] + np.arange(width)[None, :]
        groups.append(
            Group(
                family,
                index,
                units,
                schema.levels[index],
                schema.means[index],
                schema.scales[index],
            )
        )
    return tuple(groups)


def _group_log_prob(group: Group, params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[..., n] log-probabilities of one group's values x [..., n] under params [..., n, width]."""
    if group.family == "bernoulli":
        z = params[..., 0]
        return x * z - np.logaddexp(0.0, z)
    if group.family == "categorical":
        log_p = _log_softmax(params)
        index = np.clip(np.nan_to_num(x), 0, params.shape[-1] - 1).astype(np.int64)
        return np.take_along_axis(log_p, index[..., None], axis=-1)[..., 0]
    m = params.shape[-1] // 3
    if group.family == "gaussian_mixture":
        return gaussian_mixture_log_density(
            x,
            params[..., :m],
            params[..., m : 2 * m],
            params[..., 2 * m :],
            group.means,
            group.scales,
        )
    return discretized_logistic_log_prob(
        x, params[..., :m], params[..., m : 2 * m], params[..., 2 * m :], group.levels
    )


def _log_softmax(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


def softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def log_one_minus_exp(delta: np.ndarray) -> np.ndarray:
    """log(1 - e^-delta) for delta > 0, without cancellation for small or large delta."""
    return np.log(-np.expm1(-delta))


def discretized_logistic_log_prob(
    x: np.ndarray,
    logits: np.ndarray,
    means: np.ndarray,
    raw_log_scales: np.ndarray,
    levels: np.ndarray | int,
) -> np.ndarray:
    """log p(x) of levels x [...] under a mixture of M logistics discretized to L levels.

    Components live on [-1, 1] where level v sits at c_v = 2v / (L - 1) - 1 with half-width
    h = 1 / (L - 1); level v takes the mass between the edges c_v - h and c_v + h, and the edge
    levels take the tails, so the L probabilities telescope to exactly 1. The mass between edges
    b < a (in units of the scale) is log(sigmoid(a) - sigmoid(b)) = log sigmoid(b) - softplus(a)
    + a - b + log(1 - e^-(a - b)), stable for any means and scales. logits, means,
    raw_log_scales: [..., M] (broadcast against x[..., None]); levels: L, per dimension.
    """
    levels = np.asarray(levels, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    half = 1.0 / (levels - 1.0)
    centre = (2.0 * x * half - 1.0)[..., None]
    inv_scale = np.exp(-np.clip(raw_log_scales, MIN_LOG_SCALE, MAX_LOG_SCALE))
    half = np.asarray(half)[..., None] if np.ndim(half) else half
    upper = (centre + half - means) * inv_scale
    lower = (centre - half - means) * inv_scale
    delta = 2.0 * half * inv_scale
    first = -softplus(-upper)  # log sigmoid(upper): level 0 takes the lower tail
    last = -softplus(lower)  # log(1 - sigmoid(lower)): level L - 1 the upper tail
    inner = -softplus(-lower) - softplus(upper) + delta + log_one_minus_exp(delta)
    top = (levels - 1.0)[..., None] if np.ndim(levels) else levels - 1.0
    xs = x[..., None]
    component = np.where(xs <= 0, first, np.where(xs >= top, last, inner))
    weighted = component + _log_softmax(np.broadcast_to(logits, component.shape))
    peak = weighted.max(axis=-1, keepdims=True)
    return (peak + np.log(np.exp(weighted - peak).sum(axis=-1, keepdims=True)))[..., 0]


HALF_LOG_TWO_PI = 0.5 * np.log(2.0 * np.pi)


def gaussian_mixture_log_density(
    x: np.ndarray,
    logits: np.ndarray,
    means: np.ndarray,
    raw_log_scales: np.ndarray,
    column_means: np.ndarray | float,
    column_scales: np.ndarray | float,
) -> np.ndarray:
    """log p(x) of real values x [...] in the data's units, under a mixture of M Gaussians on the
    standardized value z = (x - column mean) / column scale: log sum_m pi_m N(z; mu_m, s_m)
    - log(column scale), the last term the standardization's log-Jacobian. logits, means,
    raw_log_scales: [..., M] (broadcast against x[..., None]); the column's mean and scale per
    dimension (broadcast against x)."""
    x = np.asarray(x, dtype=np.float64)
    column_scales = np.asarray(column_scales, dtype=np.float64)
    z = ((x - column_means) / column_scales)[..., None]
    log_scale = np.clip(raw_log_scales, GAUSSIAN_MIN_LOG_SCALE, MAX_LOG_SCALE)
    standard = (z - means) * np.exp(-log_scale)
    component = -0.5 * standard**2 - log_scale - HALF_LOG_TWO_PI
    weighted = component + _log_softmax(np.broadcast_to(logits, component.shape))
    peak = weighted.max(axis=-1, keepdims=True)
    log_z = (peak + np.log(np.exp(weighted - peak).sum(axis=-1, keepdims=True)))[..., 0]
    return log_z - np.log(column_scales)
