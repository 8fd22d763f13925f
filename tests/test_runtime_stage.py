"""The image's runtime stage, rehearsed without a Docker engine: a fresh venv with only `[serve]`.

The venv gets exactly the files the Dockerfile's source stage copies, installed non-editable; torch
must be absent, and made-serve from it must pass the image's HEALTHCHECK and answer requests.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.engine import Engine
from tests.dockerfile import read_stages, runtime_stage
from tests.servers import free_port, stop

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 900.0  # the first run downloads the serve extra; pip's cache makes reruns quick
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the lead venv, the repository on the path, or MADE_* settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"} and not name.startswith("MADE_")
    }
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def copy_source_stage(into: Path) -> Path:
    """Copy what the Dockerfile's `source` stage copies (a directory's contents, as COPY does)."""
    for sources, destination in read_stages()["source"].copies():
        target = into / destination.lstrip("/")
        for name in sources:
            if (ROOT / name).is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(ROOT / name, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
    return into / "src"


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding `pip install <source>[serve]` and nothing else."""
    root = tmp_path_factory.mktemp("runtime-stage")
    source = copy_source_stage(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=clean_env(), timeout=120)
    install = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{source}[serve]"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=root,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def run_in(venv: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv / "bin" / "python", "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=venv,
        timeout=60,
    )


def test_serve_extra_installs_the_service_without_torch(serve_venv: Path) -> None:
    torch = run_in(serve_venv, "import torch")
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    where = run_in(serve_venv, "import onnxruntime, service; print(service.__file__)")
    assert where.returncode == 0, where.stderr
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(serve_venv) and "site-packages" in installed.parts


def wait_ready(http: httpx.Client, process: subprocess.Popen, log: Path) -> None:
    """Poll /readyz until 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.1)  # poll interval; the loop checks the condition itself
    pytest.fail(f"made-serve not ready within {START_DEADLINE_S} s:\n{log.read_text()}")


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
    port, log = free_port(), tmp_path / "serve.log"
    command = [serve_venv / "bin" / "made-serve", "--model", tiny_artifact]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=tmp_path,
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_ready(http, process, log)
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
    finally:
        http.close()
        code = stop(process, signal.SIGTERM, STOP_DEADLINE_S)
    assert code == 0, log.read_text()
