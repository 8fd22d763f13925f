"""Schema fuzzing: schemathesis drives every documented route of the in-process app from its own
OpenAPI document; no response may be a 5xx or stray from the documented statuses and schemas."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from service.app import create_app
from service.engine import Engine
from service.settings import Settings

KEY = "fuzz-key"
EXAMPLES = 60  # per operation and mode: under a minute for the whole API


@pytest.fixture(scope="module")
def api_schema(tiny_artifact: Path) -> Iterator[schemathesis.schemas.BaseSchema]:
    # Without batching: schemathesis calls the app from its own event loop, not the lifespan's.
    settings = Settings(
        model_dir=tiny_artifact,
        batching=False,
        api_key=KEY,
        max_rows=16,
        max_samples=16,
        max_particles=256,
        default_particles=16,
    )
    app = create_app(settings, engine=Engine.load(tiny_artifact))
    with TestClient(app):  # runs the lifespan, so the model is ready
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


AUTH = {"Authorization": f"Bearer {KEY}"}


def can_be_invalid(operation: dict) -> bool:
    """A body or a query or header parameter; whatever a path holds, it is a string."""
    return "requestBody" in operation or any(
        p["in"] != "path" for p in operation.get("parameters", [])
    )


# The routes are known without a model: the factory loads the engine only in its lifespan.
# Negative cases need an input that can be invalid; the others are fuzzed positively only.
CASES = [
    (method.upper(), path, mode)
    for path, methods in create_app(Settings()).openapi()["paths"].items()
    for method, operation in methods.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or can_be_invalid(operation)
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_every_operation_conforms_to_its_schema(api_schema, method, path, mode):
    operation = api_schema[path][method]

    # derandomize: CI sees the same cases every run, so a failure is reproducible, not flaky.
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case) -> None:
        # Schema-valid is not always acceptable: D and the limits are the served model's, which
        # the model-independent schema does not state, so such requests rightly get 422.
        case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

    fuzz()
