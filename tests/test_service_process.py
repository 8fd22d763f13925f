"""One real made-serve process on a loopback port: ready, answers, stops on SIGTERM."""

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.client import MadeClient
from service.contract import artifact
from tests.servers import free_port, stop, wait_ready

pytestmark = pytest.mark.slow
MADE_SERVE = Path(sys.executable).with_name("made-serve")
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0


def test_serve_answer_and_stop(tmp_path: Path, tiny_artifact: Path) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [MADE_SERVE, "--model", tiny_artifact, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = MadeClient(f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log, START_DEADLINE_S)
        assert client.model()["dim"] == 8
        rows = np.array([[0, 1, 1, 0, 0, 1, 0, 1], [1, np.nan, 0, 1, np.nan, 0, 0, 1]])
        answer = client.log_likelihood(rows, seed=1)
        assert np.isfinite(answer.log_likelihood).all() and (answer.log_likelihood < 0).all()
        samples = client.sample(16, seed=1).samples
        assert samples.shape == (16, 8) and np.array_equal(samples, client.sample(16, 1).samples)
        completions = client.complete(rows[1:], num_samples=4, seed=1).completions
        observed = ~np.isnan(rows[1])
        assert (completions[0][:, observed] == rows[1][observed]).all()
    finally:
        client.close()
        code = stop(process, signal.SIGTERM, STOP_DEADLINE_S)
    # uvicorn finishes its shutdown, then re-raises SIGTERM so the parent sees why it stopped.
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()


def corrupt_manifest(folder: Path) -> None:
    (folder / artifact.MANIFEST_FILE).write_text('{"schema_version": 1}')


def corrupt_onnx(folder: Path) -> None:
    with (folder / artifact.ONNX_FILE).open("ab") as onnx_file:
        onnx_file.write(b"\0")


@pytest.mark.parametrize("damage", [None, corrupt_manifest, corrupt_onnx])
def test_refuses_bad_artifact(tmp_path: Path, tiny_artifact: Path, damage) -> None:
    folder = tmp_path / "artifact"
    if damage is not None:
        shutil.copytree(tiny_artifact, folder)
        damage(folder)
    result = subprocess.run(
        [MADE_SERVE, "--model", folder, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(folder) in lines[0], result.stderr
