"""The artifact's graph <-> the members' nets: an artifact's ``model.onnx`` must hold the
manifest's model, and the sampler and the parity check read the members' weights from it, so the
service (at load) and the trainer (evaluating its exports offline) read it the same way."""

import numpy as np
import onnx
from onnx import numpy_helper

from service.contract import artifact
from service.contract.artifact import ArtifactError, Manifest
from service.contract.masks import MaskPool, input_degrees
from service.contract.sampler import MemberNet, member_nets


def units_output(manifest: Manifest) -> str:
    """The graph's output of member output units: logits for a binary model, else params."""
    return artifact.OUTPUT_LOGITS if manifest.dimensions is None else artifact.OUTPUT_PARAMS


def member_nets_from_graph(model: onnx.ModelProto, manifest: Manifest) -> list[MemberNet]:
    """Member weights for the sampler, read from the graph, which must hold the manifest's model:
    its inputs and outputs, D, K, hidden sizes, direct connections, opset and degrees."""
    inputs = [i.name for i in model.graph.input]
    outputs = sorted(o.name for o in model.graph.output)
    expected = sorted((artifact.OUTPUT_LOG_PROB, units_output(manifest)))
    if inputs != [artifact.INPUT_X] or outputs != expected:
        raise ArtifactError(
            f"model.onnx reads {inputs} and writes {outputs}; this artifact's graph reads "
            f"{[artifact.INPUT_X]} and writes {expected}"
        )
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    degrees = inits.get(artifact.INIT_INPUT_DEGREES, np.zeros((0, 0), np.int64))
    x_shape = model.graph.input[0].type.tensor_type.shape.dim
    graph_dim = x_shape[1].dim_value if len(x_shape) == 2 else 0
    if graph_dim != manifest.dim or degrees.shape != (manifest.num_members, manifest.dim):
        raise ArtifactError(
            f"model.onnx has D={graph_dim} and {degrees.shape[0]} members; the manifest says "
            f"D={manifest.dim} and {manifest.num_members}"
        )
    hidden: list[np.ndarray] = []
    while (name := artifact.INIT_HIDDEN_DEGREES.format(layer=len(hidden))) in inits:
        hidden.append(inits[name])
    graph_sizes = [int(h.shape[-1]) for h in hidden]
    if graph_sizes != manifest.hidden_sizes:
        raise ArtifactError(
            f"model.onnx has hidden sizes {graph_sizes}; the manifest says hidden_sizes "
            f"{manifest.hidden_sizes}"
        )
    if (artifact.INIT_DIRECT in inits) != manifest.direct_connections:
        raise ArtifactError(
            f"model.onnx {'has' if artifact.INIT_DIRECT in inits else 'lacks'} direct "
            f"connections; the manifest says direct_connections={manifest.direct_connections}"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != manifest.onnx.opset:
        raise ArtifactError(
            f"model.onnx has opset {opset}; the manifest says onnx.opset {manifest.onnx.opset}"
        )
    for name, shape in initializer_shapes(manifest).items():
        if name not in inits:
            raise ArtifactError(f"model.onnx lacks the initializer {name!r} the manifest implies")
        if inits[name].shape != shape:
            raise ArtifactError(
                f"model.onnx initializer {name!r} has shape {list(inits[name].shape)}; the "
                f"manifest implies {list(shape)}"
            )
    orderings = np.array([m.ordering for m in manifest.members], dtype=np.int64)
    if not all(
        np.array_equal(input_degrees(o), d) for o, d in zip(orderings, degrees, strict=True)
    ):
        raise ArtifactError("model.onnx degrees do not match the manifest's orderings")
    for name, value in inits.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ArtifactError(f"model.onnx initializer {name!r} contains NaN or infinity")
    layers = len(hidden) + 1
    pool = MaskPool(orderings=orderings, hidden_degrees=tuple(hidden))
    return member_nets(
        pool,
        [inits[artifact.INIT_WEIGHT.format(layer=i)] for i in range(layers)],
        [inits[artifact.INIT_BIAS.format(layer=i)] for i in range(layers)],
        inits.get(artifact.INIT_DIRECT),
        manifest.schema(),
    )


def initializer_shapes(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """The shape of every weight, bias and degree initializer the manifest's network needs."""
    k, dim = manifest.num_members, manifest.dim
    schema = manifest.schema()
    inputs, outputs = (dim, dim) if schema is None else (schema.input_units, schema.output_units)
    sizes = [inputs, *manifest.hidden_sizes, outputs]
    shapes: dict[str, tuple[int, ...]] = {artifact.INIT_INPUT_DEGREES: (k, dim)}
    for layer, width in enumerate(manifest.hidden_sizes):
        shapes[artifact.INIT_HIDDEN_DEGREES.format(layer=layer)] = (k, width)
    for layer in range(len(sizes) - 1):
        shapes[artifact.INIT_WEIGHT.format(layer=layer)] = (sizes[layer + 1], sizes[layer])
        shapes[artifact.INIT_BIAS.format(layer=layer)] = (sizes[layer + 1],)
    if manifest.direct_connections:
        shapes[artifact.INIT_DIRECT] = (outputs, inputs)
    return shapes
