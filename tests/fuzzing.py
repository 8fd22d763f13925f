"""schemathesis against a model's own served OpenAPI document, in process: every request valid
under it answered as documented, every invalid one refused, none a 5xx."""

from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from service.inference.engine import Engine
from service.settings import Settings
from service.transport.app import create_app


def fuzz_operation(artifact: Path, path: str, mode: GenerationMode, examples: int = 25) -> None:
    """``examples`` generated requests to POST ``path`` of an app serving ``artifact`` (small
    limits, no batching: the fuzzer is after the contract, not the load)."""
    settings = Settings(
        model_dir=artifact,
        batching=False,
        max_rows=8,
        max_samples=8,
        max_particles=64,
        default_particles=8,
    )
    app = create_app(settings, engine=Engine.load(artifact))
    with TestClient(app):
        operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path]["POST"]

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            case.call_and_validate()

        fuzz()
