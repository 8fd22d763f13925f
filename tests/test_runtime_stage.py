"""The image's runtime stage, rehearsed without a Docker engine: a fresh venv with only `[serve]`.

The venv gets exactly the files the Dockerfile's source stage copies, installed non-editable; torch
must be absent, and made-serve from it must pass the image's HEALTHCHECK and answer requests.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from service.inference.engine import Engine
from tests.dockerfile import runtime_stage
from tests.stage_venvs import (
    clean_env,
    foreign_distributions,
    made_serve,
    run_in,
    runtime_stage_venv,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_stage_venv(tmp_path_factory.getbasetemp())


def test_serve_extra_installs_the_service_without_torch(serve_venv: Path) -> None:
    torch = run_in(serve_venv, "import torch")
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    assert foreign_distributions(serve_venv, ["serve"]) == []  # nor any other extra's package
    where = run_in(serve_venv, "import onnxruntime, service; print(service.__file__)")
    assert where.returncode == 0, where.stderr
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(serve_venv) and "site-packages" in installed.parts


def healthcheck(venv: Path, port: int) -> subprocess.CompletedProcess:
    """The Dockerfile's HEALTHCHECK command, run with the venv's python as the image would."""
    program, *args = runtime_stage().healthcheck()
    assert program == "python"
    return subprocess.run(
        [venv / "bin" / "python", *args],
        capture_output=True,
        text=True,
        env=clean_env(MADE_PORT=str(port)),
        timeout=30,
    )


def test_made_serve_from_the_runtime_venv_answers_and_stops(
    serve_venv: Path, tiny_artifact: Path, tmp_path: Path
) -> None:
    with made_serve(serve_venv, tiny_artifact, tmp_path / "serve.log") as (http, port):
        check = healthcheck(serve_venv, port)
        assert check.returncode == 0, check.stderr

        rows = np.array([[0, 1, 1, 0, 0, 1, 0, 1], [1, 1, 1, 1, 0, 0, 0, 0]])
        answer = http.post("/v1/log-likelihood", json={"inputs": rows.tolist()})
        assert answer.status_code == 200, answer.text
        expected = Engine.load(tiny_artifact).log_likelihood(rows.astype(np.float32))
        np.testing.assert_allclose(answer.json()["log_likelihood"], expected.log_likelihood, 1e-5)

        sample = http.post("/v1/sample", json={"num_samples": 5, "seed": 7})
        assert sample.status_code == 200, sample.text
        samples = np.array(sample.json()["samples"])
        assert samples.shape == (5, 8) and set(np.unique(samples)) <= {0, 1}

        partial = [1, 0, 1, None, None, None, None, 0]
        complete = http.post(
            "/v1/complete", json={"inputs": [partial], "num_samples": 3, "seed": 7}
        )
        assert complete.status_code == 200, complete.text
        completions = np.array(complete.json()["completions"])
        observed = [i for i, value in enumerate(partial) if value is not None]
        assert completions.shape == (1, 3, 8) and set(np.unique(completions)) <= {0, 1}
        assert (completions[0][:, observed] == [partial[i] for i in observed]).all()
