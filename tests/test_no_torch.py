"""The service loads an artifact and answers without ever importing torch."""

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from fastapi.testclient import TestClient
from service.transport.app import create_app
from service.settings import Settings

with TestClient(create_app(Settings(model_dir=sys.argv[1]))) as http:
    answer = http.post("/v1/log-likelihood", json={"inputs": [[0, 1, 1, 0, 0, 1, 0, 1]]})
    assert answer.status_code == 200, answer.text
    assert http.post("/v1/sample", json={"num_samples": 2}).status_code == 200
loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
print("torch modules:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_service_never_imports_torch(tiny_artifact: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_artifact)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch modules: []" in result.stdout
