"""HTTP figures: real uvicorn servers on 127.0.0.1 free ports and an asyncio httpx load generator.

Every run is bounded by a request count and a time limit; servers are always stopped.
"""

import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import psutil

from tests.bench.common import RESULTS

READY_TIMEOUT_S = 60.0


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], port: int) -> Iterator[dict[str, object]]:
    """Start a server process, wait for /readyz (or /docs) = 200, yield its facts, stop it."""
    RESULTS.mkdir(exist_ok=True)  # a fresh checkout has none
    log = open(RESULTS / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
    start = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=log)
    try:
        ready_s = _wait_ready(process, port, start)
        yield {"pid": process.pid, "ready_s": ready_s}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(process: subprocess.Popen, port: int, start: float) -> float:
    probe = "/readyz" if "noop" not in " ".join(process.args) else "/docs"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
        while time.perf_counter() - start < READY_TIMEOUT_S:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}; see its log")
            with contextlib.suppress(httpx.TransportError):
                if client.get(probe).status_code == 200:
                    return time.perf_counter() - start
            time.sleep(0.01)
    raise RuntimeError(f"server not ready within {READY_TIMEOUT_S} s")


def made_server(artifact: Path, port: int, batching: bool):
    env = {
        "MADE_MODEL_DIR": str(artifact),
        "MADE_BATCHING": "true" if batching else "false",
        "MADE_LOG_LEVEL": "warning",
    }
    made = Path(sys.executable).parent / "made-serve"
    return server([str(made), "--host", "127.0.0.1", "--port", str(port)], env, port)


def noop_server(port: int, app: str = "app"):
    """``app``: the no-op parsing like made-serve, or ``typical``, parsing with pydantic."""
    command = [sys.executable, "-m", "uvicorn", f"tests.bench.noop_app:{app}", "--port", str(port)]
    command += ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    return server(command, {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}, port)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))
    return total / 2**20


def body(rows: int, dim: int, seed: int) -> bytes:
    data = (np.random.default_rng(seed).random((rows, dim)) < 0.5).astype(int)
    return orjson.dumps({"inputs": data.tolist()})


def v1_request(rows: int, dim: int, seed: int) -> tuple[bytes, bytes]:
    """(head up to Content-Length, body) of a POST /v1/log-likelihood."""
    head = b"POST /v1/log-likelihood HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    return head + b"Content-Type: application/json\r\n", body(rows, dim, seed)


def v2_request(model: str, binary: bool, rows: int, dim: int, seed: int) -> tuple[bytes, bytes]:
    """(head up to Content-Length, body) of a V2 infer as tritonclient sends it (no Content-Type):
    flat JSON INT32 data, or ``binary``: the binary tensor data extension, BOOL in, FP64 out."""
    data = np.random.default_rng(seed).random((rows, dim)) < 0.5
    head = f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    tensor = {"name": "x", "shape": [rows, dim], "datatype": "BOOL" if binary else "INT32"}
    if not binary:
        flat = data.ravel().astype(int).tolist()
        return head, orjson.dumps({"inputs": [tensor | {"data": flat}]})
    tensor["parameters"] = {"binary_data_size": data.nbytes}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    head += b"Inference-Header-Content-Length: %d\r\n" % len(header)
    return head, header + data.tobytes()


async def _post(reader, writer, head: bytes, payload: bytes) -> int:
    """One keep-alive HTTP/1.1 POST on an open connection; returns the status code."""
    writer.write(head + payload)
    status_line = await reader.readuntil(b"\r\n")
    length = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _load(
    port: int, bodies: list[tuple[bytes, bytes]], clients: int, requests: int, time_limit: float
) -> dict[str, object]:
    """``clients`` keep-alive connections sending back to back. A bare asyncio HTTP/1.1 client:
    httpx spent a whole core on 160 requests/s here, so it measured itself, not the server."""
    latencies: list[float] = []
    failures = 0
    sent = 0
    deadline = time.perf_counter() + time_limit

    async def worker(index: int) -> None:
        nonlocal sent, failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                start_of_head, payload = bodies[(index + sent) % len(bodies)]
                head = start_of_head + b"Content-Length: %d\r\n\r\n" % len(payload)
                start = time.perf_counter()
                status = await _post(reader, writer, head, payload)
                if 200 <= status < 300:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures += 1
        finally:
            writer.close()

    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "ok": len(latencies),
        "failed": failures,
        "elapsed": elapsed,
        "cpu": cpu,
        "latencies": latencies,
    }


def _load_process(args: tuple, queue: multiprocessing.Queue) -> None:
    queue.put(asyncio.run(_load(*args)))


def load(
    port: int,
    rows: int,
    clients: int,
    requests: int,
    time_limit: float,
    processes: int = 1,
    dim: int = 784,
    request: Callable[[int, int, int], tuple[bytes, bytes]] = v1_request,
) -> dict[str, float]:
    """Closed-loop load: ``clients`` connections in ``processes`` client processes, each sending
    requests of ``rows`` rows back to back; requests/s, rows/s, p50/p99 and the client's CPU.
    ``request(rows, dim, seed)`` writes one request (default: /v1/log-likelihood)."""
    bodies = [request(rows, dim, seed) for seed in range(8)]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    share = (clients // processes, requests // processes)
    workers = [
        context.Process(target=_load_process, args=((port, bodies, *share, time_limit), queue))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    parts = [queue.get(timeout=time_limit + 60) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = np.concatenate([p["latencies"] for p in parts])
    elapsed = max(p["elapsed"] for p in parts)
    ok = int(sum(p["ok"] for p in parts))
    return {
        "requests_per_s": ok / elapsed,
        "rows_per_s": ok * rows / elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3) if ok else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3) if ok else float("nan"),
        "ok": ok,
        "failed": int(sum(p["failed"] for p in parts)),  # answers other than 2xx
        "client_cpu_share": sum(p["cpu"] for p in parts) / elapsed,  # cores the client used
    }
