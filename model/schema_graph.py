"""The graph's parts that a schema adds (``model.onnx_graph``): encoding the rows' levels into the
network's input units, the units' degrees, and the members' log-likelihoods from their output
units, family by family, as ``service.contract.schema`` computes them in float64.

Each function appends to the graph being built through ``node`` (which adds one node and returns
its output's name) and ``inits`` (its initializers).
"""

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from service.contract import artifact
from service.contract.schema import (
    GAUSSIAN_MIN_LOG_SCALE,
    HALF_LOG_TWO_PI,
    MAX_LOG_SCALE,
    MIN_LOG_SCALE,
    Group,
    Schema,
)

Node = Callable[..., str]
SERIES_BELOW = 0.1  # log(1 - e^-d) by its series below this: 1 - e^-d loses digits in float32


def _constant(inits: list[onnx.TensorProto], name: str, value: np.ndarray) -> str:
    inits.append(numpy_helper.from_array(value, name))
    return name


def unit_layout(schema: Schema, node: Node, inits: list[onnx.TensorProto]) -> tuple[str, str, str]:
    """(the encoded input [B, I], input unit degrees [K, I], output unit degrees [K, U]):
    one-hot units compare their dimension's level with their class, the others scale it."""
    dims = _constant(inits, "input_unit_dims", schema.input_unit_dims.astype(np.int64))
    values = node("Gather", [artifact.INPUT_X, dims], "x_units", axis=1)
    classes = _constant(inits, "unit_classes", schema.unit_classes.astype(np.float32))
    one_hot_units = _constant(inits, "unit_is_one_hot", schema.unit_classes >= 0)
    scales = _constant(inits, "unit_scales", schema.unit_scales.astype(np.float32))
    shifts = _constant(inits, "unit_shifts", schema.unit_shifts.astype(np.float32))
    one_hot = node(
        "Cast", [node("Equal", [values, classes], "x_is_class")], "x_one_hot", to=TensorProto.FLOAT
    )
    scaled = node("Add", [node("Mul", [values, scales], "x_scaled_only"), shifts], "x_scaled")
    encoded = node("Where", [one_hot_units, one_hot, scaled], "x_encoded")
    out_dims = _constant(inits, "output_unit_dims", schema.output_unit_dims.astype(np.int64))
    in_deg = node("Gather", [artifact.INIT_INPUT_DEGREES, dims], "input_unit_degrees", axis=1)
    out_deg = node("Gather", [artifact.INIT_INPUT_DEGREES, out_dims], "output_unit_degrees", axis=1)
    return encoded, in_deg, out_deg


def schema_log_prob(
    schema: Schema, params_kbu: str, node: Node, inits: list[onnx.TensorProto]
) -> str:
    """[K, B] log p_k(x) from the output units [K, B, U], summed over every group of dimensions."""
    totals = [
        _group_log_prob(i, group, params_kbu, node, inits) for i, group in enumerate(schema.groups)
    ]
    return totals[0] if len(totals) == 1 else node("Sum", totals, "log_prob_kb")


def _group_log_prob(
    i: int, group: Group, params_kbu: str, node: Node, inits: list[onnx.TensorProto]
) -> str:
    """[K, B] summed log-probabilities of one group's dimensions."""
    g = f"group{i}"
    dims = _constant(inits, f"{g}_dims", group.dims.astype(np.int64))
    x = node("Gather", [artifact.INPUT_X, dims], f"{g}_x", axis=1)  # [B, n]
    sum_over_dims = _constant(inits, f"{g}_sum_axes", np.array([2], dtype=np.int64))
    if group.family == "bernoulli":
        units = _constant(inits, f"{g}_units", group.units[:, 0].astype(np.int64))
        z = node("Gather", [params_kbu, units], f"{g}_z", axis=2)  # [K, B, n]
        two = _constant(inits, f"{g}_two", np.array(2.0, np.float32))
        one = _constant(inits, f"{g}_one", np.array(1.0, np.float32))
        sign = node("Sub", [node("Mul", [x, two], f"{g}_2x"), one], f"{g}_sign")
        signed = node("Mul", [z, sign], f"{g}_signed")
        # log sigmoid(s z) = -softplus(-s z)
        terms = node(
            "Neg", [node("Softplus", [node("Neg", [signed], f"{g}_neg")], f"{g}_sp")], f"{g}_terms"
        )
        return node("ReduceSum", [terms, sum_over_dims], f"{g}_total", keepdims=0)
    units = _constant(inits, f"{g}_units", group.units.astype(np.int64))
    p = node("Gather", [params_kbu, units], f"{g}_params", axis=2)  # [K, B, n, width]
    x_last = node("Unsqueeze", [x, _constant(inits, f"{g}_last", np.array([2]))], f"{g}_xs")
    if group.family == "categorical":
        classes = np.arange(group.units.shape[1], dtype=np.float32)
        is_class = node("Equal", [x_last, _constant(inits, f"{g}_classes", classes)], f"{g}_eq")
        one_hot = node("Cast", [is_class], f"{g}_one_hot", to=TensorProto.FLOAT)
        log_p = node("LogSoftmax", [p], f"{g}_log_softmax", axis=-1)
        chosen = node("Mul", [log_p, one_hot], f"{g}_chosen")
        axes = _constant(inits, f"{g}_axes", np.array([2, 3], dtype=np.int64))
        return node("ReduceSum", [chosen, axes], f"{g}_total", keepdims=0)
    if group.family == "gaussian_mixture":
        terms = _gaussian_mixture(g, group, p, x_last, node, inits)  # [K, B, n]
    else:
        terms = _discretized_logistic(g, group, p, x_last, node, inits)  # [K, B, n]
    return node("ReduceSum", [terms, sum_over_dims], f"{g}_total", keepdims=0)


def _mixture_parts(
    g: str, group: Group, p: str, node: Node, inits: list[onnx.TensorProto]
) -> tuple[str, str, str]:
    """A mixture family's params [K, B, n, 3M] split into its M logits, M means and M raw
    log-scales, each [K, B, n, M]."""
    m = group.units.shape[1] // 3

    def part(j: int) -> str:
        index = _constant(inits, f"{g}_part{j}", np.arange(j * m, (j + 1) * m, dtype=np.int64))
        return node("Gather", [p, index], f"{g}_part{j}_values", axis=3)

    return part(0), part(1), part(2)


def _gaussian_mixture(
    g: str, group: Group, p: str, x: str, node: Node, inits: list[onnx.TensorProto]
) -> str:
    """[K, B, n] log densities of real values x [B, n, 1] (data units) under params
    [K, B, n, 3M] (``service.contract.schema.gaussian_mixture_log_density``)."""
    logits, means, raw = _mixture_parts(g, group, p, node, inits)

    def f32(name: str, value: np.ndarray | float) -> str:
        return _constant(inits, f"{g}_{name}", np.asarray(value, dtype=np.float32))

    # (x - mean) first: exact for values near the mean, where x / scale - mean / scale would
    # cancel in float32.
    centred = node("Sub", [x, f32("column_means", group.means[:, None])], f"{g}_centred")
    z = node("Mul", [centred, f32("inv_column_scales", 1.0 / group.scales[:, None])], f"{g}_z")
    log_scale = node(
        "Clip",
        [raw, f32("min_log_scale", GAUSSIAN_MIN_LOG_SCALE), f32("max_log_scale", MAX_LOG_SCALE)],
        f"{g}_log_scale",
    )
    inv_scale = node("Exp", [node("Neg", [log_scale], f"{g}_neg_log_scale")], f"{g}_inv_scale")
    standard = node("Mul", [node("Sub", [z, means], f"{g}_offset"), inv_scale], f"{g}_standard")
    square = node("Mul", [standard, standard], f"{g}_square")
    component = node(
        "Sub",
        [
            node("Mul", [square, f32("minus_half", -0.5)], f"{g}_half_square"),
            node("Add", [log_scale, f32("half_log_two_pi", HALF_LOG_TWO_PI)], f"{g}_norm"),
        ],
        f"{g}_component",
    )
    weighted = node(
        "Add",
        [component, node("LogSoftmax", [logits], f"{g}_log_weights", axis=-1)],
        f"{g}_weighted",
    )
    log_z = node("ReduceLogSumExp", [weighted], f"{g}_log_z", axes=[3], keepdims=0)
    jacobian = f32("log_column_scales", np.log(group.scales)[None, :])
    return node("Sub", [log_z, jacobian], f"{g}_terms")


def _discretized_logistic(
    g: str, group: Group, p: str, x: str, node: Node, inits: list[onnx.TensorProto]
) -> str:
    """[K, B, n] log p(x) of ordinal levels x [B, n, 1] under params [K, B, n, 3M]
    (``service.contract.schema.discretized_logistic_log_prob``)."""
    logits, means, raw = _mixture_parts(g, group, p, node, inits)

    def f32(name: str, value: np.ndarray | float) -> str:
        return _constant(inits, f"{g}_{name}", np.asarray(value, dtype=np.float32))

    half_value = (1.0 / (group.levels - 1.0))[:, None]  # [n, 1]
    half = f32("half", half_value)
    log_scale = node(
        "Clip",
        [raw, f32("min_log_scale", MIN_LOG_SCALE), f32("max_log_scale", MAX_LOG_SCALE)],
        f"{g}_log_scale",
    )
    inv_scale = node("Exp", [node("Neg", [log_scale], f"{g}_neg_log_scale")], f"{g}_inv_scale")
    centre = node(
        "Sub",
        [node("Mul", [x, f32("two_half", 2 * half_value)], f"{g}_2xh"), f32("one", 1.0)],
        f"{g}_centre",
    )
    offset = node("Sub", [centre, means], f"{g}_offset")
    upper = node("Mul", [node("Add", [offset, half], f"{g}_up"), inv_scale], f"{g}_upper")
    lower = node("Mul", [node("Sub", [offset, half], f"{g}_low"), inv_scale], f"{g}_lower")
    delta = node("Mul", [f32("width", 2 * half_value), inv_scale], f"{g}_delta")

    def softplus(name: str, value: str) -> str:
        return node("Softplus", [value], f"{g}_softplus_{name}")

    def neg(name: str, value: str) -> str:
        return node("Neg", [value], f"{g}_neg_{name}")

    first = neg("first", softplus("neg_upper", neg("upper", upper)))
    last = neg("last", softplus("lower", lower))
    log_one_minus = _log_one_minus_exp(g, delta, node, f32)
    inner = node(
        "Add",
        [
            node(
                "Sub",
                [neg("lsl", softplus("neg_lower", neg("lower", lower))), softplus("upper", upper)],
                f"{g}_inner_a",
            ),
            node("Add", [delta, log_one_minus], f"{g}_inner_b"),
        ],
        f"{g}_inner",
    )
    top = f32("top", (group.levels - 1.0)[:, None])
    at_first = node("LessOrEqual", [x, f32("zero", 0.0)], f"{g}_at_first")
    at_last = node("GreaterOrEqual", [x, top], f"{g}_at_last")
    component = node(
        "Where",
        [at_first, first, node("Where", [at_last, last, inner], f"{g}_not_first")],
        f"{g}_component",
    )
    weighted = node(
        "Add",
        [component, node("LogSoftmax", [logits], f"{g}_log_weights", axis=-1)],
        f"{g}_weighted",
    )
    return node("ReduceLogSumExp", [weighted], f"{g}_terms", axes=[3], keepdims=0)


def _log_one_minus_exp(g: str, delta: str, node: Node, f32: Callable[..., str]) -> str:
    """log(1 - e^-d) for d > 0; below SERIES_BELOW by log d - d/2 + d^2/24 - d^4/2880 (its
    truncation error below 1e-11 there), where 1 - e^-d would cancel in float32."""
    log_d = node("Log", [delta], f"{g}_log_delta")
    d2 = node("Mul", [delta, delta], f"{g}_delta2")
    series = node(
        "Add",
        [
            node(
                "Sub", [log_d, node("Mul", [delta, f32("half_c", 0.5)], f"{g}_d_half")], f"{g}_s1"
            ),
            node(
                "Sub",
                [
                    node("Mul", [d2, f32("c24", 1 / 24)], f"{g}_d2_24"),
                    node(
                        "Mul",
                        [node("Mul", [d2, d2], f"{g}_delta4"), f32("c2880", 1 / 2880)],
                        f"{g}_d4_2880",
                    ),
                ],
                f"{g}_s2",
            ),
        ],
        f"{g}_series",
    )
    direct = node(
        "Log",
        [
            node(
                "Sub",
                [f32("unit", 1.0), node("Exp", [node("Neg", [delta], f"{g}_nd")], f"{g}_e")],
                f"{g}_1me",
            )
        ],
        f"{g}_direct",
    )
    small = node("Less", [delta, f32("series_below", SERIES_BELOW)], f"{g}_small")
    return node("Where", [small, series, direct], f"{g}_log1mexp")
