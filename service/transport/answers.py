"""The v1 JSON bodies of the data plane's answers, one shape whichever route (the FastAPI one or
``service.transport.hot_path``) answered."""

import numpy as np

from service.contract.schema import Categorical, Schema
from service.inference.anomaly import Surprise
from service.inference.data_plane import Completions, Likelihoods
from service.inference.engine import Engine
from service.inference.errors import InvalidField
from service.transport.columns import column_names, is_table


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
    if answer.bits_per_dim is not None:  # not for densities
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
    value = item.value if not float(item.value).is_integer() else int(item.value)
    fields.update(value=value, surprise=item.surprise)
    return fields


def _labelled(schema: Schema | None) -> dict[int, list[str]]:
    return {
        d: dimension.labels
        for d, dimension in enumerate(schema.dimensions if schema else ())
        if isinstance(dimension, Categorical) and dimension.labels
    }


def labelled_dimensions(schema: Schema | None) -> dict[int, list[str]]:
    """Each labelled categorical dimension's labels; 422 (before any work) for a model with none,
    asked for labels."""
    labelled = _labelled(schema)
    if not labelled:
        raise InvalidField(("labels",), "this model has no labelled dimensions")
    return labelled


def cells(rows: np.ndarray, schema: Schema | None, labels: bool) -> np.ndarray:
    """Rows [..., D] as an object array of JSON values: a level as an int (a labelled
    categorical's as its label where ``labels``), a real value as the float its float32 prints as
    (so a value sent comes back as written)."""
    out = rows.astype(np.int64).astype(object)
    if schema is not None and schema.has_continuous:
        real = rows[..., schema.continuous].astype(np.float32)
        out[..., schema.continuous] = real.astype(str).astype(np.float64).astype(object)
    if labels:
        for d, names in labelled_dimensions(schema).items():
            out[..., d] = np.asarray(names, dtype=object)[rows[..., d].astype(np.int64)]
    return out


def table_rows(rows: np.ndarray, schema: Schema) -> list:
    """Rows [..., D] of a tabular model as objects keyed by column name, nested as the rows."""
    names = column_names(schema) or ()
    values = cells(rows, schema, labels=bool(_labelled(schema)))
    flat = [dict(zip(names, row, strict=True)) for row in values.reshape(-1, len(names)).tolist()]
    return np.asarray(flat, dtype=object).reshape(rows.shape[:-1]).tolist()


def rows_body(rows: np.ndarray, engine: Engine, labels: bool) -> object:
    """Sampled rows for JSON: a tabular model's as objects; rows with real values or labels as
    nested lists; else the smallest unsigned integers holding the model's levels."""
    schema = engine.schema
    if is_table(schema):
        return table_rows(rows, schema)
    if labels or (schema is not None and schema.has_continuous):
        return cells(rows, schema, labels).tolist()
    return rows.astype(np.uint8 if engine.max_level <= 255 else np.uint16)


def probabilities_body(probabilities: list[dict[int, np.ndarray]], schema: Schema) -> list:
    """Per row, {column: {class (its label, or its index as text): probability}}."""
    names = column_names(schema) or tuple(str(d) for d in range(schema.dim))
    body = []
    for row in probabilities:
        columns = {}
        for d, p in row.items():
            dimension = schema.dimensions[d]
            keys = getattr(dimension, "labels", None) or [str(c) for c in range(len(p))]
            columns[names[d]] = dict(zip(keys, p.tolist(), strict=True))
        body.append(columns)
    return body


def completion_body(answer: Completions, engine: Engine, labels: bool = False) -> dict[str, object]:
    completion = answer.completion
    body: dict[str, object] = {
        "completions": rows_body(completion.samples, engine, labels),
        "method": completion.method,
        "effective_sample_size": completion.effective_sample_size,
        "particles_capped": completion.particles_capped,
        "warning": answer.warning,
        "seed": answer.seed,
    }
    if answer.probabilities is not None:
        body["probabilities"] = probabilities_body(answer.probabilities, engine.schema)
    return body
