"""Build the ensemble's ONNX graph directly from weights and degrees.

The graph stores each weight matrix once plus the integer degrees of every member; the K masked
copies are computed in the graph from constants only, so onnxruntime folds them once at load time
and the file stays about the size of the float32 weights.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service import artifact
from service.masks import MaskPool

OPSET = 17


def build_graph(
    pool: MaskPool,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    direct_weight: np.ndarray | None,
) -> onnx.ModelProto:
    """weights[l]: [out, in] float32 for every hidden layer and then the output layer."""
    dim, k = pool.dim, pool.num_members
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(pool.input_degrees(), artifact.INIT_INPUT_DEGREES)
    ]
    nodes: list[onnx.NodeProto] = []
    inits += [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]

    def node(op: str, inputs: list[str], output: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def masked_weight(layer: int, out_deg: str, in_deg: str, compare: str) -> str:
        """[K, in, out] float: weight_l * mask_k, transposed for x @ W."""
        w_name = artifact.INIT_WEIGHT.format(layer=layer)
        inits.append(numpy_helper.from_array(weights[layer].astype(np.float32), w_name))
        out_col = node("Unsqueeze", [out_deg, "axis2"], f"{w_name}_out_deg")
        in_row = node("Unsqueeze", [in_deg, "axis1"], f"{w_name}_in_deg")
        mask = node(compare, [out_col, in_row], f"{w_name}_mask_bool")
        mask_f = node("Cast", [mask], f"{w_name}_mask", to=TensorProto.FLOAT)
        masked = node("Mul", [mask_f, w_name], f"{w_name}_masked")
        return node("Transpose", [masked], f"{w_name}_masked_t", perm=[0, 2, 1])

    hidden = "x"
    previous_deg = artifact.INIT_INPUT_DEGREES
    num_hidden = len(pool.hidden_degrees)
    for layer in range(num_hidden):
        deg_name = artifact.INIT_HIDDEN_DEGREES.format(layer=layer)
        inits.append(numpy_helper.from_array(pool.hidden_degrees[layer].astype(np.int64), deg_name))
        w_t = masked_weight(layer, deg_name, previous_deg, "GreaterOrEqual")
        b_name = artifact.INIT_BIAS.format(layer=layer)
        inits.append(numpy_helper.from_array(biases[layer].astype(np.float32), b_name))
        pre = node("MatMul", [hidden, w_t], f"pre_{layer}")
        hidden = node("Relu", [node("Add", [pre, b_name], f"pre_bias_{layer}")], f"hidden_{layer}")
        previous_deg = deg_name

    w_out = masked_weight(num_hidden, artifact.INIT_INPUT_DEGREES, previous_deg, "Greater")
    b_out = artifact.INIT_BIAS.format(layer=num_hidden)
    inits.append(numpy_helper.from_array(biases[num_hidden].astype(np.float32), b_out))
    logits_kbd = node("Add", [node("MatMul", [hidden, w_out], "out_pre"), b_out], "out_logits")
    if direct_weight is not None:
        inits.append(
            numpy_helper.from_array(direct_weight.astype(np.float32), artifact.INIT_DIRECT)
        )
        d_deg = artifact.INIT_INPUT_DEGREES
        out_col = node("Unsqueeze", [d_deg, "axis2"], "direct_out_deg")
        in_row = node("Unsqueeze", [d_deg, "axis1"], "direct_in_deg")
        mask = node(
            "Cast",
            [node("Greater", [out_col, in_row], "direct_mask_bool")],
            "direct_mask",
            to=TensorProto.FLOAT,
        )
        masked = node("Mul", [mask, artifact.INIT_DIRECT], "direct_masked")
        direct_t = node("Transpose", [masked], "direct_masked_t", perm=[0, 2, 1])
        direct_out = node("MatMul", ["x", direct_t], "direct_logits")
        logits_kbd = node("Add", [logits_kbd, direct_out], "all_logits")

    logits = node("Transpose", [logits_kbd], artifact.OUTPUT_LOGITS, perm=[1, 0, 2])
    # log p(x_d | x_<d) = x * l - softplus(l), softplus(l) = relu(l) + log(1 + exp(-|l|)):
    # stable for any l, unlike a fused binary cross-entropy export.
    magnitude = node("Neg", [node("Abs", [logits], "sp_abs")], "sp_neg_abs")
    log1p_exp = node(
        "Log", [node("Add", [node("Exp", [magnitude], "sp_exp"), "one"], "sp_1p")], "sp_log1p"
    )
    softplus = node("Add", [node("Relu", [logits], "sp_relu"), log1p_exp], "softplus")
    x_b1d = node("Unsqueeze", ["x", "axis1"], "x_b1d")
    terms = node("Sub", [node("Mul", [x_b1d, logits], "x_logits"), softplus], "log_terms")
    node("ReduceSum", [terms, "axis2"], artifact.OUTPUT_LOG_PROB, keepdims=0)

    graph = helper.make_graph(
        nodes,
        "made_ensemble",
        [helper.make_tensor_value_info(artifact.INPUT_X, TensorProto.FLOAT, ["batch", dim])],
        [
            helper.make_tensor_value_info(
                artifact.OUTPUT_LOG_PROB, TensorProto.FLOAT, ["batch", k]
            ),
            helper.make_tensor_value_info(
                artifact.OUTPUT_LOGITS, TensorProto.FLOAT, ["batch", k, dim]
            ),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="made-serve"
    )
    onnx.checker.check_model(model)
    return model
