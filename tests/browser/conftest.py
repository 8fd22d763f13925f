"""Browser fixtures: Debian's chromium driven by Playwright, and real made-serve processes."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page

from tests.conftest import train_tiny
from tests.servers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MADE_SERVE = Path(sys.executable).with_name("made-serve")
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "page"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright's launch arguments, pointed at the system chromium (never a download)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 800}}


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of the page, collected for the test to assert on."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll /readyz until 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.1)  # poll interval, not synchronisation: the loop checks the condition
    pytest.fail(f"made-serve not ready within {START_DEADLINE_S} s:\n{log.read_text()}")


@contextmanager
def made_serve(artifact: Path, log: Path, **settings: str) -> Iterator[str]:
    """A made-serve process on a free loopback port with MADE_* ``settings``; yields its URL.
    ``artifact`` is served with --model, or as a repository when ``model_repository`` is set."""
    port = free_port()
    env = {**os.environ, "MADE_LOG_LEVEL": "warning"}
    env.update({f"MADE_{key.upper()}": value for key, value in settings.items()})
    source = [] if "model_repository" in settings else ["--model", artifact]
    with log.open("w") as output:
        process = subprocess.Popen(
            [MADE_SERVE, *source, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# Small enough that the page can be made to exceed it, so a real 422 can be shown.
MAX_SAMPLES = 16


@pytest.fixture(scope="module")
def server(digits_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One open made-serve process for the module's tests, serving the 8x8 digits artifact."""
    log = tmp_path_factory.mktemp("page-server") / "serve.log"
    with made_serve(digits_artifact, log, max_samples=str(MAX_SAMPLES)) as url:
        yield url


@pytest.fixture
def keyed_server(digits_artifact: Path, tmp_path: Path) -> Callable[[str], object]:
    """Start a made-serve process that requires ``key``: ``with keyed_server(key) as url``."""
    return lambda key: made_serve(digits_artifact, tmp_path / "serve.log", api_key=key)


@pytest.fixture(scope="module")
def row_server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A made-serve process for a model without an image shape (D=8)."""
    log = tmp_path_factory.mktemp("row-server") / "serve.log"
    with made_serve(tiny_artifact, log) as url:
        yield url


@pytest.fixture(scope="module")
def repository_server(
    digits_artifact: Path, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A model repository of two: the digits images (the default) and the D=8 rows model."""
    with digits_and(digits_artifact, tiny_artifact, "rows", tmp_path_factory) as url:
        yield url


@contextmanager
def digits_and(
    digits_artifact: Path, artifact: Path, name: str, factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A made-serve process on a model repository of the digits images (the default) and
    ``artifact`` as model ``name``."""
    root = factory.mktemp(f"page-repository-{name}")
    shutil.copytree(digits_artifact, root / "digits")
    shutil.copytree(artifact, root / name)
    log = factory.mktemp(f"repository-server-{name}") / "serve.log"
    with made_serve(root, log, model_repository=str(root), default_model="digits") as url:
        yield url


@pytest.fixture(scope="module")
def uncalibrated_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The digits model trained without calibration rows, so the service refuses p-values."""
    from model.export import export

    run = tmp_path_factory.mktemp("uncalibrated-run")
    trained = train_tiny(run, run, source="digits", epochs=2, calibration_fraction=0.0)
    artifact = tmp_path_factory.mktemp("artifacts") / "uncalibrated-digits"
    export(trained, artifact)
    log = tmp_path_factory.mktemp("uncalibrated-server") / "serve.log"
    with made_serve(artifact, log) as url:
        yield url


@pytest.fixture(scope="module")
def levels_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A made-serve process for digits at 17 grey levels (ordinal dimensions), briefly trained."""
    from model.export import export

    run = tmp_path_factory.mktemp("levels-run")
    trained = train_tiny(run, run, source="digits-levels", epochs=2)  # ignores the data folder
    artifact = tmp_path_factory.mktemp("artifacts") / "digits-levels"
    export(trained, artifact)
    log = tmp_path_factory.mktemp("levels-server") / "serve.log"
    with made_serve(artifact, log, max_samples=str(MAX_SAMPLES)) as url:
        yield url
