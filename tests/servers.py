"""What tests and benchmarks that run real server processes share."""

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen, signal_number: int, timeout: float) -> int:
    """Send ``signal_number``, wait up to ``timeout`` for the exit code; kill it if it hangs."""
    process.send_signal(signal_number)
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_ready(
    base_url: str, process: subprocess.Popen, log: Path, deadline_s: float = 60.0
) -> None:
    """Poll ``base_url``/readyz until 200; fail with the server's log if it dies or is late."""
    deadline = time.monotonic() + deadline_s
    with httpx.Client(base_url=base_url, timeout=5) as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:  # not listening yet
                pass
            time.sleep(0.1)  # poll interval, not synchronisation: the loop checks the condition
    pytest.fail(f"made-serve not ready within {deadline_s} s:\n{log.read_text()}")


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """The ASGI scope uvicorn builds for ``POST path``, for tests that drive the app directly."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }


@contextmanager
def made_serve(artifact: Path, log: Path) -> Iterator[str]:
    """A made-serve process serving ``artifact`` on a free loopback port, its output in ``log``;
    yields ``127.0.0.1:PORT`` once it is ready, and stops it with SIGTERM after."""
    port = free_port()
    command = [Path(sys.executable).with_name("made-serve"), "--model", artifact]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process, signal.SIGTERM, 30.0)
