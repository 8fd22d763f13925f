"""The v1 JSON bodies of the data plane's answers, one shape whichever route (the FastAPI one or
``service.transport.hot_path``) answered."""

import numpy as np

from service.contract.schema import Categorical, Schema
from service.inference.anomaly import Surprise
from service.inference.data_plane import Completions, Likelihoods
from service.inference.engine import Engine
from service.inference.errors import InvalidField


def likelihood_body(
    answer: Likelihoods, image_shape: tuple[int, int] | None = None
) -> dict[str, object]:
    """``image_shape`` places explained dimensions as pixels too."""
    body: dict[str, object] = {}
    if answer.per_member is not None:
        body["per_member"] = answer.per_member
    if answer.per_dimension is not None:
        body["per_dimension"] = answer.per_dimension
    if answer.seed is not None:
        body["seed"] = answer.seed
    body["log_likelihood"] = answer.log_likelihood
    body["bits_per_dim"] = answer.bits_per_dim
    body["method"] = answer.method
    body["standard_error"] = answer.standard_error
    body["effective_sample_size"] = answer.effective_sample_size
    body["combination"] = answer.combination
    if answer.product_normaliser is not None:
        body["product_normaliser"] = answer.product_normaliser.model_dump()
    if (anomaly := answer.anomaly) is not None:
        body["score"] = anomaly.score
        body["anomaly_score"] = anomaly.anomaly_score
        body["p_value"] = anomaly.p_value
        if anomaly.anomalous is not None:
            body["alpha"] = anomaly.alpha
            body["anomalous"] = anomaly.anomalous
    if answer.explanation is not None:
        body["explanation"] = [
            [surprise_item(item, image_shape) for item in row] for row in answer.explanation
        ]
    return body


def surprise_item(item: Surprise, image_shape: tuple[int, int] | None) -> dict[str, object]:
    fields: dict[str, object] = {"index": item.index}
    if image_shape is not None:
        fields["pixel"] = list(divmod(item.index, image_shape[1]))
    fields.update(value=int(item.value), surprise=item.surprise)
    return fields


def labelled_dimensions(schema: Schema | None) -> dict[int, list[str]]:
    """Each labelled categorical dimension's labels; 422 (before any work) for a model with none,
    asked for labels."""
    labelled = {
        d: dimension.labels
        for d, dimension in enumerate(schema.dimensions if schema else ())
        if isinstance(dimension, Categorical) and dimension.labels
    }
    if not labelled:
        raise InvalidField(("labels",), "this model has no labelled dimensions")
    return labelled


def with_labels(rows: np.ndarray, schema: Schema | None) -> list:
    """Rows [..., D] as nested lists, a labelled categorical dimension's values as its labels."""
    cells = rows.astype(np.int64).astype(object)
    for d, labels in labelled_dimensions(schema).items():
        cells[..., d] = np.asarray(labels, dtype=object)[rows[..., d].astype(np.int64)]
    return cells.tolist()


def rows_body(rows: np.ndarray, engine: Engine, labels: bool) -> object:
    """Sampled rows for JSON: the smallest unsigned integers holding the model's levels, or
    nested lists with labels where asked."""
    if labels:
        return with_labels(rows, engine.schema)
    return rows.astype(np.uint8 if engine.max_level <= 255 else np.uint16)


def completion_body(answer: Completions, engine: Engine, labels: bool = False) -> dict[str, object]:
    completion = answer.completion
    return {
        "completions": rows_body(completion.samples, engine, labels),
        "method": completion.method,
        "effective_sample_size": completion.effective_sample_size,
        "particles_capped": completion.particles_capped,
        "warning": answer.warning,
        "seed": answer.seed,
    }
