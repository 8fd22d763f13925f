"""Epoch time of the Fashion-MNIST preset in 1 and 2 torchrun processes (issue 19), a benchmark,
not a test: ``python -m tests.bench.ddp_epoch`` (a few minutes on 2 cores; needs the
dataset-fashion-mnist package or --data-dir).

Each configuration runs ``torchrun --nproc-per-node N -m model.cli --preset fashion-mnist
--epochs E`` into a temporary folder (deleted), as a user would. The epoch time is metrics.jsonl's
(training and rank 0's validation); the wall time adds starting the processes, loading the data
on every rank, and rank 0's final evaluation. torchrun gives each of several processes one
thread (OMP_NUM_THREADS=1), so a row with one single-threaded process is also measured: it shows
what the second process adds, apart from the threads a lone process uses.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.common import DATA, machine
from tests.servers import free_port

BIN = Path(sys.executable).parent
# (label, processes, OMP_NUM_THREADS for a single process: None leaves torch's default)
CONFIGURATIONS = [
    ("1 process, torch's default threads", 1, None),
    ("1 process, 1 thread", 1, "1"),
    ("2 processes (torchrun), 1 thread each", 2, None),
]


def run(processes: int, threads: str | None, epochs: int, data_dir: Path, folder: Path) -> dict:
    out = folder / f"run-{processes}-{threads}"
    command = [str(BIN / "torchrun"), "--nproc-per-node", str(processes)]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    command += ["-m", "model.cli", "--preset", "fashion-mnist", "--data-dir", str(data_dir)]
    command += ["--epochs", str(epochs), "--out", str(out), "--quiet"]
    env = {**os.environ, **({"OMP_NUM_THREADS": threads} if threads else {})}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "epoch_s": records[-1]["seconds"] / len(records),
        "wall_s": wall,
        "valid_nll": records[-1]["valid_mixture_nll"],
        # The machine is shared: a load above 0 before a run means someone else was running.
        "load": (load_before, os.getloadavg()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"{args.data_dir} does not exist: apt-get install dataset-fashion-mnist")
    folder = Path(tempfile.mkdtemp(prefix="made-ddp-bench-"))
    try:
        results = [
            (label, run(processes, threads, args.epochs, args.data_dir, folder))
            for label, processes, threads in CONFIGURATIONS
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"Fashion-MNIST preset (1x1000, K=8, direct, batch 100), {args.epochs} epoch(s)")
    print(f"machine: {json.dumps(machine())}")
    baseline = results[0][1]["epoch_s"]
    print(f"| {'configuration':<40} | epoch s | vs default | wall s | valid NLL | 1-min load |")
    print(f"|{'-' * 42}|---------|------------|--------|-----------|------------|")
    for label, r in results:
        print(
            f"| {label:<40} | {r['epoch_s']:7.1f} | {baseline / r['epoch_s']:9.2f}x "
            f"| {r['wall_s']:6.1f} | {r['valid_nll']:9.2f} "
            f"| {r['load'][0]:.1f} -> {r['load'][1]:.1f} |"
        )


if __name__ == "__main__":
    main()
