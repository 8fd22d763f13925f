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

    model_dir: Path = Field(Path("artifacts/digits"), description="Artifact directory to serve.")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    intra_op_threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads; 0 = available CPUs / workers."
    )
    batching: bool = Field(True, description="Merge concurrent requests into one model call.")
    max_batch_size: int = Field(256, ge=1, description="Most rows in one batched model call.")
    max_queue_delay_ms: float = Field(
        2.0, ge=0, description="Longest wait for more rows before a batch runs."
    )
    max_queue_rows: int = Field(
        4096, ge=1, description="Rows waiting at most; beyond it requests get 503."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="A request waiting longer gets 503 and its work is dropped."
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    max_rows: int = Field(1024, ge=1, description="Most input rows in one request.")
    max_samples: int = Field(1024, ge=1, description="Most samples or completions per request.")
    max_particles: int = Field(
        16384, ge=1, description="Most importance-sampling particles per request."
    )
    default_particles: int = Field(256, ge=1, description="Particles when a request does not say.")
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
