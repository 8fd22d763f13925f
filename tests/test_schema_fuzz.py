"""Schema fuzzing: schemathesis drives every documented route from the served OpenAPI document,
with and without an API key, with every check: no 5xx, statuses, headers and bodies as documented,
every request valid under the document accepted and every invalid one refused.

In process (fast, every operation and mode) and, marked slow, the schemathesis CLI from outside
against a real made-serve process, as a user would run it.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from service.contract.artifact import read_manifest
from service.inference.engine import Engine
from service.settings import Settings
from service.transport.app import create_app
from tests.servers import free_port, stop, wait_ready

KEY = "fuzz-key"
EXAMPLES = 30  # per operation, mode and key configuration: about a minute for all of them
LIMITS = dict(max_rows=16, max_samples=16, max_particles=256, default_particles=16)
KEYS = {"with a key": KEY, "without a key": None}


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module", params=list(KEYS))
def api(request, tiny_artifact: Path) -> Iterator[tuple[schemathesis.schemas.BaseSchema, str]]:
    # Without batching: schemathesis calls the app from its own event loop, not the lifespan's.
    key = KEYS[request.param]
    settings = Settings(model_dir=tiny_artifact, batching=False, api_key=key, **LIMITS)
    app = create_app(settings, engine=Engine.load(tiny_artifact))
    with TestClient(app):  # runs the lifespan, so the model is ready and the document its own
        yield (
            schemathesis.openapi.from_asgi("/openapi.json", app),
            key,
            read_manifest(tiny_artifact),
        )


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
def test_every_operation_conforms_to_its_schema(api, method, path, mode):
    schema, key, manifest = api
    # The served document writes the per-model routes out for the model in memory.
    served = path.replace("{name}", manifest.name) if path.startswith("/v1/models/{") else path
    served = served.replace("{version}", manifest.onnx.sha256[:12]) if served != path else served
    operation = schema[served][method]

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
        case.call_and_validate(headers=auth(key))

    fuzz()


def body_schema(document: dict, path: str) -> dict:
    return document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
def test_the_document_states_the_served_model_and_its_examples_are_answered(
    digits_artifact: Path, key: str | None
) -> None:
    """D = 64 as 8 x 8 images: rows are exactly that, png is offered, and every example is
    answered 200 (a D = 4 example would get 422)."""
    settings = Settings(model_dir=digits_artifact, api_key=key, **LIMITS)
    with TestClient(create_app(settings)) as client:
        document = client.get("/openapi.json").json()
        complete_rows, with_nulls = body_schema(document, "/v1/log-likelihood")["anyOf"]
        flat, image = complete_rows["properties"]["inputs"]["anyOf"]
        assert (
            flat["maxItems"] == 16 and flat["items"]["minItems"] == 64 == flat["items"]["maxItems"]
        )
        assert image["items"]["minItems"] == 8 and image["items"]["items"]["maxItems"] == 8
        assert with_nulls["properties"]["per_member"] == {"const": False}
        sample = body_schema(document, "/v1/sample")["properties"]
        assert sample["format"]["enum"] == ["json", "png"]
        assert sample["num_samples"]["maximum"] == 16
        for path in ("/v1/log-likelihood", "/v1/complete", "/v1/sample"):
            for example in body_schema(document, path)["examples"]:
                response = client.post(path, json=example, headers=auth(key))
                assert response.status_code == 200, (path, response.text)


def test_only_a_configured_key_is_documented(tiny_artifact: Path) -> None:
    """Without a key nothing asks for one and admin says it answers 403; with one, admin does not
    document the 403 it never answers."""
    for key in KEYS.values():
        settings = Settings(model_dir=tiny_artifact, api_key=key)
        with TestClient(create_app(settings)) as client:
            document = client.get("/openapi.json").json()
            reload = document["paths"]["/v1/admin/reload"]["post"]
            assert client.post("/v1/admin/reload", json={}).status_code == (401 if key else 403)
        operations = [op for ops in document["paths"].values() for op in ops.values()]
        if key:
            assert reload["security"] and "401" in reload["responses"]
            assert "403" not in reload["responses"]
        else:
            assert not any("security" in op or "401" in op["responses"] for op in operations)
            assert "securitySchemes" not in document.get("components", {})
            assert "403" in reload["responses"]


# A V2 infer tensor's data must hold as many values as its shape says, which JSON Schema cannot
# state: a body valid under the schema may still get 400 there. So V2 infer is run without that
# one check (positive_data_acceptance); every other check runs on every operation.
CLI_SELECTIONS = [
    ["--exclude-path-regex", "/infer$"],
    ["--include-path-regex", "/infer$", "--exclude-checks", "positive_data_acceptance"],
]


@pytest.mark.slow
@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
def test_the_schemathesis_cli_finds_nothing(
    tmp_path: Path, digits_artifact: Path, key: str | None
) -> None:
    """``schemathesis run URL/openapi.json --checks all`` against a real process, bounded."""
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "MADE_LOG_LEVEL": "warning", "MADE_API_KEY": key or ""}
    env |= {f"MADE_{name.upper()}": str(value) for name, value in LIMITS.items()}
    bin_dir = Path(sys.executable).parent
    command = [bin_dir / "made-serve", "--model", digits_artifact, "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server, log)
        headers = [arg for name, value in auth(key).items() for arg in ("-H", f"{name}: {value}")]
        # 8 per operation: the per-model routes tripled the operations (50 s a run at 15), and the
        # in-process test above fuzzes every operation again.
        bounded = ["--max-examples", "8", "--seed", "1", "--request-timeout", "10"]
        quiet = ["--generation-database", "none", "--no-color"]
        cli = [bin_dir / "schemathesis", "run", f"{url}/openapi.json", "--checks", "all"]
        runs = [
            subprocess.run(
                [*cli, *selection, *bounded, *quiet, *headers],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=600,
            )
            for selection in CLI_SELECTIONS
        ]
    finally:
        stop(server, signal.SIGTERM, timeout=30)
    for run in runs:
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
