"""A typed client for the /v1 API on httpx, sync and async: numpy arrays in, numpy arrays out.

Rows are [B, D] (or [B, H, W] for image models) with entries 0 or 1 and NaN for a missing entry,
which is sent as JSON null. Log-likelihoods are in nats (for models with real-valued columns,
log densities in the data's units, without bits per dimension). A pandas DataFrame is taken as
rows keyed by column name, and answered with DataFrames; pandas is imported only then, so the
client runs without it.
"""

import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from numpy.typing import ArrayLike


class MadeClientError(Exception):
    """The server refused a request: its HTTP status and its ``detail`` (a string or a list)."""

    def __init__(self, status: int, detail: object):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def loc(self) -> tuple[str | int, ...]:
        """Where the first validation error is, e.g. ("body", "inputs", 0); () otherwise."""
        if isinstance(self.detail, list) and self.detail and isinstance(self.detail[0], dict):
            return tuple(self.detail[0].get("loc", ()))
        return ()


@dataclass(frozen=True)
class AnomalyOptions:
    """What a log-likelihood request asks beyond the likelihood (complete rows only)."""

    p_value: bool = False  # conformal p-values against the artifact's calibration rows
    alpha: float | None = None  # flag p <= alpha (implies p_value)
    score: str | None = None  # "log_likelihood" or "complexity_corrected" (implies p_value)
    explain: int | None = None  # this many most surprising dimensions per row


@dataclass(frozen=True)
class LogLikelihood:
    log_likelihood: np.ndarray  # [B] nats; of the observed entries for rows with NaN
    bits_per_dim: np.ndarray | None  # [B]; None for densities (real-valued columns)
    method: tuple[str, ...]  # [B] "exact" or "importance"
    standard_error: np.ndarray  # [B] of the log estimate, 0 where exact
    effective_sample_size: np.ndarray  # [B], NaN where exact
    seed: int | None  # set when some row needed particles
    per_member: np.ndarray | None  # [B, K]
    per_dimension: np.ndarray | None  # [B, K, D]
    # With p-values (p_value, alpha or score asked):
    p_value: np.ndarray | None = None  # [B] conformal, against the artifact's calibration rows
    anomaly_score: np.ndarray | None = None  # [B] higher = more unusual
    anomalous: np.ndarray | None = None  # [B] bool, p <= alpha, when an alpha applied
    # With explain=k: per row, its k most surprising dimensions as dicts (index, value, surprise).
    explanation: list[list[dict[str, Any]]] | None = None


@dataclass(frozen=True)
class Completions:
    # [B, n, D] uint8 (uint16 for levels past 255); float64 for a model with real-valued
    # columns; with labels=True (or a tabular model's answer) an object array, a labelled
    # column's entries its labels. As a frame: a DataFrame indexed by (row, sample).
    completions: Any
    method: tuple[str, ...]  # [B]
    effective_sample_size: np.ndarray  # [B], NaN where exact
    seed: int
    particles_capped: tuple[bool, ...]  # [B] the particle cap bound: draws may repeat
    warning: str | None  # the server's explanation when a row was capped
    # Tabular models: per row, {column: {class: estimated p(class | observed)}} for each
    # categorical column the row lacks.
    probabilities: list[dict[str, dict[str, float]]] | None = None


@dataclass(frozen=True)
class Samples:
    samples: Any  # [n, D] as Completions.completions; a DataFrame as a frame
    seed: int


def _is_frame(inputs: object) -> bool:
    """Whether ``inputs`` is a pandas DataFrame, without importing pandas."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(inputs, pandas.DataFrame)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:  # pragma: no cover - the serve image has no pandas
        raise ImportError("as_frame needs pandas: pip install pandas") from None
    return pandas


def encode_rows(inputs: ArrayLike) -> list:
    """Rows to JSON lists: whole numbers (0/1, or a schema model's levels) become ints, NaN
    becomes null, anything else is left for the server to refuse (so a 0.5 is reported, not
    silently rounded). Strings (a labelled categorical's labels) are sent as they are. A
    DataFrame's rows become objects keyed by its column names (NaN and None: null)."""
    if _is_frame(inputs):
        frame: Any = inputs
        values = encode_rows(frame.astype(object).where(frame.notna(), None).to_numpy(object))
        names = [str(column) for column in frame.columns]
        return [dict(zip(names, row, strict=True)) for row in values]
    cells = np.asarray(inputs, dtype=object)
    labels = np.vectorize(lambda cell: isinstance(cell, str), otypes=[bool])(cells)
    numbers = np.where(labels | np.equal(cells, None), np.nan, cells).astype(np.float64)
    cells = _numbers_to_json(numbers)
    cells[labels] = np.asarray(inputs, dtype=object)[labels]
    return cells.tolist()


def _numbers_to_json(array: np.ndarray) -> np.ndarray:
    """An object array of ints for whole numbers, None for NaN, floats otherwise."""
    cells = array.astype(object)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(array) & (array == np.round(array))
    cells[whole] = array[whole].astype(np.int64)
    cells[np.isnan(array)] = None
    return cells


def _levels(values: list, labels: bool = False) -> np.ndarray:
    """Answered rows as the smallest unsigned type that holds them (uint8 for 0/1 and 8 bits);
    float64 where some are real values; with labels, or rows answered as objects (a tabular
    model's), as objects in column order (ints, floats and the labels of labelled columns)."""
    if _holds_objects(values):
        return np.asarray(_object_values(values), dtype=object)
    if labels:
        return np.asarray(values, dtype=object)
    array = np.asarray(values)
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    array = array.astype(np.int64)
    return array.astype(np.uint8 if array.size == 0 or array.max() <= 255 else np.uint16)


def _holds_objects(values: list) -> bool:
    """Whether the answered rows (nested as samples or completions) are objects."""
    first: object = values
    while isinstance(first, list) and first:
        first = first[0]
    return isinstance(first, dict)


def _object_values(values: list) -> list:
    """Rows answered as objects -> lists of their values (the server keys them in column order)."""
    return [list(v.values()) if isinstance(v, dict) else _object_values(v) for v in values]


def _frame(values: list, columns: list[str], completions: bool) -> Any:
    """Answered rows as a DataFrame: samples one row each; completions indexed by (row, sample)."""
    pandas = _pandas()
    if not completions:
        return pandas.DataFrame(_as_records(values, columns), columns=columns)
    index = [(b, s) for b, rows in enumerate(values) for s in range(len(rows))]
    records = _as_records([row for rows in values for row in rows], columns)
    names = pandas.MultiIndex.from_tuples(index, names=["row", "sample"])
    return pandas.DataFrame(records, columns=columns, index=names)


def _as_records(rows: list, columns: list[str]) -> list[dict]:
    return [row if isinstance(row, dict) else dict(zip(columns, row, strict=True)) for row in rows]


@dataclass(frozen=True)
class _FrameSpec:
    """How to ask and read a request whose answer is wanted as a DataFrame: the model's column
    names (positions where unnamed) and whether to ask for labels (when it has some)."""

    columns: list[str]
    labels: bool

    @classmethod
    def of(cls, model: dict[str, Any]) -> "_FrameSpec":
        dimensions = model.get("dimensions") or [{} for _ in range(model["dim"])]
        columns = [d.get("name") or str(i) for i, d in enumerate(dimensions)]
        return cls(columns, any(d.get("labels") for d in dimensions))


def _body(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _likelihood_body(
    inputs: ArrayLike,
    per_member: bool,
    per_dimension: bool,
    num_particles: int | None,
    seed: int | None,
    combination: str,
    anomaly: AnomalyOptions,
) -> dict[str, Any]:
    return _body(
        inputs=encode_rows(inputs),
        per_member=per_member or None,
        per_dimension=per_dimension or None,
        num_particles=num_particles,
        seed=seed,
        combination=None if combination == "mixture" else combination,
        p_value=anomaly.p_value or None,
        alpha=anomaly.alpha,
        score=anomaly.score,
        explain=anomaly.explain,
    )


def _complete_body(
    inputs: ArrayLike, num_samples: int, num_particles: int | None, seed: int | None, labels: bool
) -> dict[str, Any]:
    return _body(
        inputs=encode_rows(inputs),
        num_samples=num_samples,
        num_particles=num_particles,
        seed=seed,
        labels=labels or None,
    )


def _sizes(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _optional(values: list | None, dtype: type) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=dtype)


def _log_likelihood(data: dict[str, Any]) -> LogLikelihood:
    return LogLikelihood(
        log_likelihood=np.asarray(data["log_likelihood"], dtype=np.float64),
        bits_per_dim=_optional(data.get("bits_per_dim"), np.float64),
        method=tuple(data["method"]),
        standard_error=np.asarray(data["standard_error"], dtype=np.float64),
        effective_sample_size=_sizes(data["effective_sample_size"]),
        seed=data.get("seed"),
        per_member=_optional(data.get("per_member"), np.float64),
        per_dimension=_optional(data.get("per_dimension"), np.float64),
        p_value=_optional(data.get("p_value"), np.float64),
        anomaly_score=_optional(data.get("anomaly_score"), np.float64),
        anomalous=_optional(data.get("anomalous"), bool),
        explanation=data.get("explanation"),
    )


def _completions(data: dict[str, Any], labels: bool, frame: _FrameSpec | None) -> Completions:
    rows = data["completions"]
    return Completions(
        completions=_levels(rows, labels) if frame is None else _frame(rows, frame.columns, True),
        method=tuple(data["method"]),
        effective_sample_size=_sizes(data["effective_sample_size"]),
        seed=data["seed"],
        particles_capped=tuple(data["particles_capped"]),
        warning=data.get("warning"),
        probabilities=data.get("probabilities"),
    )


def _samples(data: dict[str, Any], labels: bool, frame: _FrameSpec | None) -> Samples:
    rows = data["samples"]
    samples = _levels(rows, labels) if frame is None else _frame(rows, frame.columns, False)
    return Samples(samples, data["seed"])


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise MadeClientError(response.status_code, detail)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class _Routes:
    """The paths of one model: the server's default one (``model`` None), a named one (its
    latest version) or a named version."""

    model: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.model is None:
            raise ValueError("a version needs a model name")

    @property
    def info(self) -> str:
        if self.model is None:
            return "/v1/model"
        path = f"/v1/models/{quote(self.model, safe='')}"
        return path if self.version is None else f"{path}/versions/{quote(self.version, safe='')}"

    def of(self, operation: str) -> str:
        return f"/v1/{operation}" if self.model is None else f"{self.info}/{operation}"


class MadeClient:
    """Blocking client. Pass ``base_url``, or an ``httpx.Client`` (e.g. FastAPI's TestClient);
    ``model`` (and ``version``) to talk to one model of a repository instead of the default."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        model: str | None = None,
        version: str | None = None,
    ):
        self.http = client or httpx.Client(base_url=base_url, transport=transport, timeout=timeout)
        self.headers = _headers(api_key)
        self.routes = _Routes(model, version)

    def _get(self, path: str) -> httpx.Response:
        return _checked(self.http.get(path, headers=self.headers))

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return _checked(self.http.post(path, json=body, headers=self.headers))

    def ready(self) -> bool:
        """True once the model is loaded and warmed up (/readyz answers 200)."""
        return self.http.get("/readyz", headers=self.headers).status_code == 200

    def model(self) -> dict[str, Any]:
        return self._get(self.routes.info).json()

    def models(self) -> list[dict[str, Any]]:
        """Every model the server's repository holds, with its versions and their state."""
        return self._get("/v1/models").json()["models"]

    def log_likelihood(
        self,
        inputs: ArrayLike,
        per_member: bool = False,
        per_dimension: bool = False,
        num_particles: int | None = None,
        seed: int | None = None,
        combination: str = "mixture",
        anomaly: AnomalyOptions | None = None,
    ) -> LogLikelihood:
        """``combination="product"``: the normalised product of experts (complete rows only).
        ``anomaly``: p-values, an alpha, the score, explanations (complete rows only)."""
        body = _likelihood_body(
            inputs,
            per_member,
            per_dimension,
            num_particles,
            seed,
            combination,
            anomaly or AnomalyOptions(),
        )
        return _log_likelihood(self._post(self.routes.of("log-likelihood"), body).json())

    def complete(
        self,
        inputs: ArrayLike,
        num_samples: int = 1,
        num_particles: int | None = None,
        seed: int | None = None,
        labels: bool = False,
        as_frame: bool = False,
    ) -> Completions:
        """``labels``: a labelled categorical column's values come back as its labels.
        ``as_frame`` (implied by a DataFrame's inputs): completions as a DataFrame indexed by
        (row, sample), categoricals as their labels."""
        frame = _FrameSpec.of(self.model()) if as_frame or _is_frame(inputs) else None
        labels = labels or (frame is not None and frame.labels)
        body = _complete_body(inputs, num_samples, num_particles, seed, labels)
        return _completions(self._post(self.routes.of("complete"), body).json(), labels, frame)

    def complete_png(
        self, inputs: ArrayLike, num_samples: int = 1, seed: int | None = None
    ) -> bytes:
        """A PNG grid of the completions, one row of the grid per input (image models only)."""
        body = _body(inputs=encode_rows(inputs), num_samples=num_samples, seed=seed, format="png")
        return self._post(self.routes.of("complete"), body).content

    def sample(
        self,
        num_samples: int = 1,
        seed: int | None = None,
        labels: bool = False,
        as_frame: bool = False,
    ) -> Samples:
        """``labels``: a labelled categorical column's values come back as its labels.
        ``as_frame``: samples as a DataFrame, categoricals as their labels."""
        frame = _FrameSpec.of(self.model()) if as_frame else None
        labels = labels or (frame is not None and frame.labels)
        body = _body(num_samples=num_samples, seed=seed, labels=labels or None)
        return _samples(self._post(self.routes.of("sample"), body).json(), labels, frame)

    def sample_png(self, num_samples: int = 1, seed: int | None = None) -> bytes:
        body = _body(num_samples=num_samples, seed=seed, format="png")
        return self._post(self.routes.of("sample"), body).content

    def close(self) -> None:
        self.http.close()


class AsyncMadeClient:
    """The same API for asyncio; pass ``base_url``, an ``httpx.AsyncClient`` or a transport."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        model: str | None = None,
        version: str | None = None,
    ):
        self.http = client or httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=timeout
        )
        self.headers = _headers(api_key)
        self.routes = _Routes(model, version)

    async def _get(self, path: str) -> httpx.Response:
        return _checked(await self.http.get(path, headers=self.headers))

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return _checked(await self.http.post(path, json=body, headers=self.headers))

    async def ready(self) -> bool:
        return (await self.http.get("/readyz", headers=self.headers)).status_code == 200

    async def model(self) -> dict[str, Any]:
        return (await self._get(self.routes.info)).json()

    async def models(self) -> list[dict[str, Any]]:
        return (await self._get("/v1/models")).json()["models"]

    async def log_likelihood(
        self,
        inputs: ArrayLike,
        per_member: bool = False,
        per_dimension: bool = False,
        num_particles: int | None = None,
        seed: int | None = None,
        combination: str = "mixture",
        anomaly: AnomalyOptions | None = None,
    ) -> LogLikelihood:
        body = _likelihood_body(
            inputs,
            per_member,
            per_dimension,
            num_particles,
            seed,
            combination,
            anomaly or AnomalyOptions(),
        )
        return _log_likelihood((await self._post(self.routes.of("log-likelihood"), body)).json())

    async def complete(
        self,
        inputs: ArrayLike,
        num_samples: int = 1,
        num_particles: int | None = None,
        seed: int | None = None,
        labels: bool = False,
        as_frame: bool = False,
    ) -> Completions:
        frame = _FrameSpec.of(await self.model()) if as_frame or _is_frame(inputs) else None
        labels = labels or (frame is not None and frame.labels)
        body = _complete_body(inputs, num_samples, num_particles, seed, labels)
        answer = (await self._post(self.routes.of("complete"), body)).json()
        return _completions(answer, labels, frame)

    async def sample(
        self,
        num_samples: int = 1,
        seed: int | None = None,
        labels: bool = False,
        as_frame: bool = False,
    ) -> Samples:
        frame = _FrameSpec.of(await self.model()) if as_frame else None
        labels = labels or (frame is not None and frame.labels)
        body = _body(num_samples=num_samples, seed=seed, labels=labels or None)
        answer = (await self._post(self.routes.of("sample"), body)).json()
        return _samples(answer, labels, frame)

    async def aclose(self) -> None:
        await self.http.aclose()
