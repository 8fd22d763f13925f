"""What tests and benchmarks that run real server processes share."""

import socket
import subprocess


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
