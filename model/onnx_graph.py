"""Build the ensemble's ONNX graph directly from weights and degrees.

The graph stores each weight matrix once plus the integer degrees of every member; the K masked
copies are computed in the graph from constants only, so onnxruntime folds them once at load time
and the file stays about the size of the float32 weights.

Each member's log-likelihood L = sum_d log sigmoid(z_d), z_d = (2 x_d - 1) * logit_d, is reduced
in float32 over chunks of c <= 64 dimensions (c the largest divisor of D up to 64) as
sum_chunks (sum_d min(z_d, 0) + log prod_d sigmoid(|z_d|)). Every term is <= 0, so with
u = 2^-24 the sums of c terms and then of D/c chunks lose at most (c + D/c) u |L| (Higham's
bound for sums of one sign), and each chunk's product of c factors in [1/2, 1] with its log at
most about 4 c u, given Sigmoid and Log within 4 ulps (as measured for onnxruntime's): in all
|L_float32 - L| <= (c + D/c + 5) u |L| + 4 D u for the graph's own logits, 4.5e-6 |L| + 1.9e-4
nats at D = 784 (c = 56). The parity checks (``service.contract.parity``) allow for this and for the
logits' own rounding.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model.schema_graph import schema_log_prob, unit_layout
from service.contract import artifact
from service.contract.masks import MaskPool
from service.contract.schema import Schema

OPSET = 17
MAX_CHUNK = 64  # sigmoid(|z|) >= 1/2, so a product of 64 of them is >= 2^-64
UNIT_ROUNDOFF = 2.0**-24  # float32


def chunk_size(dim: int) -> int:
    """The largest divisor of D up to MAX_CHUNK: the graph reduces D dimensions in D/c chunks."""
    return max(c for c in range(1, min(dim, MAX_CHUNK) + 1) if dim % c == 0)


def reduction_error_bound(dim: int) -> tuple[float, float]:
    """(relative, absolute nats): |L_float32 - L| <= relative * |L| + absolute for the graph's
    own logits (see the module's docstring)."""
    c = chunk_size(dim)
    return (c + dim // c + 5) * UNIT_ROUNDOFF, 4 * dim * UNIT_ROUNDOFF


def build_graph(
    pool: MaskPool,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    direct_weight: np.ndarray | None,
    schema: Schema | None = None,
) -> onnx.ModelProto:
    """weights[l]: [out, in] float32 for every hidden layer and then the output layer.

    Binary (no schema): outputs ``log_prob`` and ``logits``. With a schema the graph reads levels,
    encodes them (``schema_graph``) and outputs ``log_prob`` and ``params``.
    """
    dim, k = pool.dim, pool.num_members
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(pool.input_degrees(), artifact.INIT_INPUT_DEGREES)
    ]
    nodes: list[onnx.NodeProto] = []
    inits += [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([3], dtype=np.int64), "axis3"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]

    def node(op: str, inputs: list[str], output: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def masked_weight(layer: int, out_deg: str, in_deg: str, compare: str) -> str:
        """[K, out, in] float: weight_l * mask_k."""
        w_name = artifact.INIT_WEIGHT.format(layer=layer)
        inits.append(numpy_helper.from_array(weights[layer].astype(np.float32), w_name))
        return masked(w_name, out_deg, in_deg, compare)

    def masked(w_name: str, out_deg: str, in_deg: str, compare: str) -> str:
        out_col = node("Unsqueeze", [out_deg, "axis2"], f"{w_name}_out_deg")
        in_row = node("Unsqueeze", [in_deg, "axis1"], f"{w_name}_in_deg")
        mask = node(compare, [out_col, in_row], f"{w_name}_mask_bool")
        mask_f = node("Cast", [mask], f"{w_name}_mask", to=TensorProto.FLOAT)
        return node("Mul", [mask_f, w_name], f"{w_name}_masked")

    def from_x(weight_kout_in: str, out: int) -> str:
        """x @ W_k for every member at once, [K, B, out].

        All members read the same x, so their masked weights sit side by side in one [D, K*out]
        matrix: one wide GEMM runs faster than K narrow ones at the small batches serving sees.
        """
        side_by_side = node(
            "Reshape",
            [
                node("Transpose", [weight_kout_in], f"{weight_kout_in}_iko", perm=[2, 0, 1]),
                "d_k_out",
            ],
            f"{weight_kout_in}_wide",
        )
        shape = f"{weight_kout_in}_b_k_out"
        inits.append(numpy_helper.from_array(np.array([0, k, out], dtype=np.int64), shape))
        product = node("MatMul", [network_input, side_by_side], f"{weight_kout_in}_x")
        per_member = node("Reshape", [product, shape], f"{weight_kout_in}_bko")
        return node("Transpose", [per_member], f"{weight_kout_in}_kbo", perm=[1, 0, 2])

    def apply(weight_kout_in: str, hidden: str | None, out: int) -> str:
        """[K, B, out]: the layer on x (hidden is None) or on the members' own [K, B, in]."""
        if hidden is None:
            return from_x(weight_kout_in, out)
        w_t = node("Transpose", [weight_kout_in], f"{weight_kout_in}_t", perm=[0, 2, 1])
        return node("MatMul", [hidden, w_t], f"{weight_kout_in}_h")

    if schema is None:
        network_input, in_deg, out_deg, in_units, out_units = (
            artifact.INPUT_X,
            artifact.INIT_INPUT_DEGREES,
            artifact.INIT_INPUT_DEGREES,
            dim,
            dim,
        )
    else:
        network_input, in_deg, out_deg = unit_layout(schema, node, inits)
        in_units, out_units = schema.input_units, schema.output_units
    inits.append(numpy_helper.from_array(np.array([in_units, -1], dtype=np.int64), "d_k_out"))
    hidden: str | None = None
    previous_deg = in_deg
    num_hidden = len(pool.hidden_degrees)
    for layer in range(num_hidden):
        deg_name = artifact.INIT_HIDDEN_DEGREES.format(layer=layer)
        inits.append(numpy_helper.from_array(pool.hidden_degrees[layer].astype(np.int64), deg_name))
        w = masked_weight(layer, deg_name, previous_deg, "GreaterOrEqual")
        b_name = artifact.INIT_BIAS.format(layer=layer)
        inits.append(numpy_helper.from_array(biases[layer].astype(np.float32), b_name))
        pre = apply(w, hidden, len(biases[layer]))
        hidden = node("Relu", [node("Add", [pre, b_name], f"pre_bias_{layer}")], f"hidden_{layer}")
        previous_deg = deg_name

    w_out = masked_weight(num_hidden, out_deg, previous_deg, "Greater")
    b_out = artifact.INIT_BIAS.format(layer=num_hidden)
    inits.append(numpy_helper.from_array(biases[num_hidden].astype(np.float32), b_out))
    logits_kbd = node("Add", [apply(w_out, hidden, out_units), b_out], "out_logits")
    if direct_weight is not None:
        inits.append(
            numpy_helper.from_array(direct_weight.astype(np.float32), artifact.INIT_DIRECT)
        )
        direct = from_x(masked(artifact.INIT_DIRECT, out_deg, in_deg, "Greater"), out_units)
        logits_kbd = node("Add", [logits_kbd, direct], "all_logits")

    if schema is not None:
        node("Transpose", [logits_kbd], artifact.OUTPUT_PARAMS, perm=[1, 0, 2])
        per_member = schema_log_prob(schema, logits_kbd, node, inits)
        node("Transpose", [per_member], artifact.OUTPUT_LOG_PROB, perm=[1, 0])
        return _model(nodes, inits, dim, k, artifact.OUTPUT_PARAMS, out_units)

    node("Transpose", [logits_kbd], artifact.OUTPUT_LOGITS, perm=[1, 0, 2])
    # log p(x_d | x_<d) = log sigmoid(z) with z = (2 x - 1) * logit, and log sigmoid(z) =
    # min(z, 0) + log sigmoid(|z|): stable for any logit, as sigmoid(|z|) >= 1/2 never underflows.
    # The logs are taken of products over chunks of at most 64 dimensions (>= 2^-64, still a
    # normal float32), so only one element in every chunk pays for a log; summing each chunk
    # first, then the chunks, bounds the rounding whatever order a ReduceSum adds in.
    sign = node("Sub", [node("Add", ["x", "x"], "two_x"), "one"], "sign")
    z = node("Mul", [logits_kbd, sign], "signed_logits")
    chunk = chunk_size(dim)
    inits.append(
        numpy_helper.from_array(np.array([k, -1, dim // chunk, chunk], dtype=np.int64), "chunked")
    )
    negative_part = node(
        "ReduceSum",
        [
            node("Reshape", [node("Min", [z, "zero"], "z_min_0"), "chunked"], "z_min_0_chunked"),
            "axis3",
        ],
        "chunk_sums_min_0",
        keepdims=0,
    )
    sig_abs = node("Sigmoid", [node("Abs", [z], "z_abs")], "sig_abs")
    chunk_products = node(
        "ReduceProd",
        [node("Reshape", [sig_abs, "chunked"], "sig_abs_chunked")],
        "chunk_products",
        axes=[3],
        keepdims=0,
    )
    chunk_totals = node(
        "Add", [negative_part, node("Log", [chunk_products], "chunk_logs")], "chunk_totals"
    )
    per_member = node("ReduceSum", [chunk_totals, "axis2"], "log_prob_kb", keepdims=0)
    node("Transpose", [per_member], artifact.OUTPUT_LOG_PROB, perm=[1, 0])
    return _model(nodes, inits, dim, k, artifact.OUTPUT_LOGITS, dim)


def _model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    dim: int,
    k: int,
    units_output: str,
    units: int,
) -> onnx.ModelProto:
    """The checked model: x [B, D] in; log_prob [B, K] and the output units [B, K, U] out.
    Initializers no node reads (the binary reduction's constants in a schema graph) are dropped."""
    read = {name for n in nodes for name in n.input}
    inits = [init for init in inits if init.name in read]
    graph = helper.make_graph(
        nodes,
        "made_ensemble",
        [helper.make_tensor_value_info(artifact.INPUT_X, TensorProto.FLOAT, ["batch", dim])],
        [
            helper.make_tensor_value_info(
                artifact.OUTPUT_LOG_PROB, TensorProto.FLOAT, ["batch", k]
            ),
            helper.make_tensor_value_info(units_output, TensorProto.FLOAT, ["batch", k, units]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="made-serve"
    )
    onnx.checker.check_model(model)
    return model
