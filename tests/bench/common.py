"""What the benchmarks share: the reference artifacts, timing with spread, the machine."""

import hashlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench-results"
DATA = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
# The reference configuration (one hidden layer of 500, K=8, no direct connections); one
# epoch is enough, speed does not depend on quality.
REFERENCE = ["--preset", "fashion-mnist", "--hidden", "500", "--masks", "8", "--no-direct"]
REFERENCE += ["--epochs", "1"]
# Keyed by the configuration, so changing it never reuses a stale cached model.
CACHE = RESULTS / "cache" / hashlib.sha256(" ".join(REFERENCE).encode()).hexdigest()[:12]


def reference_artifact(ordering: str = "random") -> Path:
    """The reference model's artifact in bench-results/cache: trained once, exported again
    whenever the exporter's code changes (a changed graph is what a benchmark wants to see)."""
    run = CACHE / f"run-{ordering}"
    bin_dir = Path(sys.executable).parent
    if not (run / "model.pt").exists():
        print(f"training the reference model ({ordering} orderings) into {run} ...", flush=True)
        train = [str(bin_dir / "made-train"), *REFERENCE, "--ordering", ordering]
        subprocess.run([*train, "--out", str(run), "--data-dir", str(DATA), "--quiet"], check=True)
    artifact = CACHE / f"artifact-{ordering}-{_exporter_digest()}"
    if not (artifact / "manifest.json").exists():
        export = [str(bin_dir / "made-export"), str(run / "model.pt"), "--out", str(artifact)]
        subprocess.run(export, check=True)
    return artifact


def _exporter_digest() -> str:
    code = b"".join((REPO / "model" / name).read_bytes() for name in ("onnx_graph.py", "export.py"))
    return hashlib.sha256(code).hexdigest()[:12]


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated measurements (the machine is shared)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def rate(work: Callable[[], object], items: int, repeats: int = 5, min_time: float = 0.3):
    """items/s of ``work`` (which handles ``items`` items per call): one figure per repeat."""
    work()  # warm-up: lazy initialisation is not throughput
    figures = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            work()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        figures.append(calls * items / elapsed)
    return figures


def machine() -> dict[str, object]:
    """What the figures were measured on, including how busy the machine was."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    from service.settings import available_cpus

    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "available_cpus": available_cpus(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
