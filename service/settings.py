"""Service settings: one pydantic-settings class, read from ``MADE_*`` environment variables."""

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MADE_", extra="ignore")

    model_dir: Path = Field(
        Path("artifacts/digits"),
        description="Artifact directory to serve (without MADE_MODEL_REPOSITORY).",
    )
    model_repository: Path | None = Field(
        None,
        description="Folder of models to serve instead: one subfolder per model name, holding an "
        "artifact or numbered version folders (1/, 2/).",
    )
    default_model: str | None = Field(
        None,
        description="The model the plain /v1 routes answer for; default: the only one.",
    )
    startup_models: list[str] | None = Field(
        None,
        description='Models loaded at start, JSON list (["a", "b"]); default: every model. '
        "/readyz is 200 once they are all loaded.",
    )
    max_loaded_models: int | None = Field(
        None,
        ge=1,
        description="Model versions loaded at once at most; loading one more unloads the least "
        "recently used. Unset: no limit.",
    )
    load_on_demand: bool = Field(
        True,
        description="Load a model a request asks for that is not loaded; off: 503 with "
        "Retry-After until it is loaded through the repository API.",
    )
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="onnxruntime intra-op threads of the process, shared out between the models "
        "it may hold; 0 = available CPUs / workers.",
    )
    batching: bool = Field(True, description="Merge concurrent requests into one model call.")
    max_batch_size: int = Field(256, ge=1, description="Most rows in one batched model call.")
    max_queue_delay_ms: float = Field(
        2.0, ge=0, description="Longest wait for more rows before a batch runs."
    )
    # The queue is bounded by what its callers can use: rows the model works off within the
    # request timeout at its measured rows/s, within a memory bound. A fixed row count turned away
    # 64 clients x 100 rows that the server answers in under a second (issue 13).
    max_queue_rows: int | None = Field(
        None,
        ge=1,
        description="Rows waiting at most, when set; unset: bounded by MADE_REQUEST_TIMEOUT_S "
        "of work at the measured rows/s and by MADE_MAX_QUEUE_BYTES only.",
    )
    max_queue_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="Bytes of rows waiting (4 x D per row) at most; beyond it requests get 503.",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request waiting longer gets 503 and its work is dropped; the batch queue "
        "admits a request only if the rows ahead of it and its own take less at the measured "
        "rows/s.",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Request line and headers larger than this get 431 and the connection closes.",
    )
    read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request not received in full this long after its first byte (or its "
        "connection's opening) gets 408 and the connection closes.",
    )
    max_rows: int = Field(1024, ge=1, description="Most input rows in one request.")
    max_samples: int = Field(1024, ge=1, description="Most samples or completions per request.")
    max_particles: int = Field(
        16384,
        ge=1,
        description="Most importance-sampling particles per row; completion sets grow up to it.",
    )
    default_particles: int = Field(256, ge=1, description="Particles when a request does not say.")
    anomaly_alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="When set, log-likelihood answers with p-values also flag anomalous rows "
        "(p <= alpha) unless the request gives its own alpha.",
    )
    log_level: str = Field(
        "info", description="Logging level; logs are JSON lines on stderr, one per request."
    )
    api_key: str | None = Field(
        None,
        description="When set (non-empty), every route but health and metrics needs "
        "'Authorization: Bearer <key>'; admin routes are off without it.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='CORS origins, JSON list (["https://a.example"]); empty = off.',
    )
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="Seconds to finish in-flight requests on SIGTERM."
    )

    def onnx_threads(self) -> int:
        return self.intra_op_threads or max(1, available_cpus() // self.workers)

    def threads_per_model(self, models: int) -> int:
        """Each session's share of the process's threads when ``models`` may be loaded at once,
        so that together they do not oversubscribe the CPUs (one thread: the caller's only)."""
        return max(1, self.onnx_threads() // max(1, models))


def counted_samples(num_samples: int, max_samples: int) -> int:
    """What ``num_samples`` counts for in num_samples x rows <= MADE_MAX_SAMPLES: its next power
    of two, within ``max_samples``. At most twice the exact product, and it puts the rule in a
    dozen bands of num_samples, which a JSON schema can state (see
    ``service.transport.schemas.complete_body``)."""
    return min(1 << (num_samples - 1).bit_length(), max_samples)
