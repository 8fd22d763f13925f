"""Training on data larger than it is sensible to hold in memory (issue 19), a benchmark, not a
test: ``python -m tests.bench.large_data`` (about 30 minutes on 2 cores, 5 GB of disk).

It writes, in a temporary folder deleted at the end, a binary data set of ``--rows`` rows of
D=784 as a uint8 ``.npy`` file (5.5 million rows: 4.3 GB, over 4 GiB) and trains one epoch of the
1x500, K=8 model on it, memory-mapped, in a process of its own whose peak resident memory is read
from /proc. It packs the same rows 1 bit each (``made-data pack``) and reports the packing's size,
time and memory. On the first ``--fit-rows`` rows, a set that fits in memory, it compares rows/s
of the in-memory loader (a .npz, read whole as float32, as every source was read before) with
the memory-mapped .npy and the packed bits. The rows are noisy copies of 100 random prototypes:
what is learnt does not matter here, how fast rows arrive does.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tests.bench.common import machine

DIM = 784
EVAL_ROWS = 10_000  # each of valid and test
CHUNK_ROWS = 65_536  # rows generated and copied at a time
FLIP = 0.05  # each entry of a row differs from its prototype's with this probability


def write_npy(path: Path, rows: int, fill) -> None:
    """A [rows, DIM] uint8 .npy file written ``CHUNK_ROWS`` rows at a time by ``fill(start, n)``."""
    with path.open("wb") as handle:
        header = {"descr": "|u1", "fortran_order": False, "shape": (rows, DIM)}
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, rows, CHUNK_ROWS):
            fill(start, min(CHUNK_ROWS, rows - start)).astype(np.uint8).tofile(handle)


def generate(folder: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    prototypes = rng.random((100, DIM)) < rng.uniform(0.1, 0.5, (100, 1))

    def noisy(start: int, n: int) -> np.ndarray:
        chosen = prototypes[rng.integers(len(prototypes), size=n)]
        return chosen ^ (rng.random((n, DIM), dtype=np.float32) < FLIP)

    folder.mkdir(parents=True)
    for split, n in (("train", rows), ("valid", EVAL_ROWS), ("test", EVAL_ROWS)):
        write_npy(folder / f"{split}.npy", n, noisy)


def fitting_sets(big: Path, folder: Path, rows: int) -> dict[str, Path]:
    """The first ``rows`` training rows of ``big`` (and its valid and test rows) as .npy files,
    a .npz and packed bits."""
    npy = folder / "fit-npy"
    npy.mkdir()
    train = np.load(big / "train.npy", mmap_mode="r")
    write_npy(npy / "train.npy", rows, lambda start, n: train[start : start + n])
    for split in ("valid", "test"):
        shutil.copy(big / f"{split}.npy", npy / f"{split}.npy")
    archive = folder / "fit.npz"
    np.savez(
        archive, **{f"{s}_data": np.load(npy / f"{s}.npy") for s in ("train", "valid", "test")}
    )
    packed = folder / "fit-packed"
    child({"task": "pack", "input": str(npy), "out": str(packed)})
    return {"npz": archive, "files": npy, "packed": packed}


# -- the measured process -------------------------------------------------------------------------
def status_kib(field: str) -> int:
    line = next(
        line
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(field)
    )
    return int(line.split()[1])


class PeakSampler:
    """Peaks of this process's anonymous and file-backed resident memory, sampled every 50 ms
    (the kernel keeps only the total's peak, VmHWM)."""

    def __init__(self) -> None:
        self.peaks = {"RssAnon:": 0, "RssFile:": 0}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            for field in self.peaks:
                self.peaks[field] = max(self.peaks[field], status_kib(field))

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.thread.join()
        return {
            "peak_rss_mb": status_kib("VmHWM:") / 1024,
            "peak_anon_mb": self.peaks["RssAnon:"] / 1024,
            "peak_file_mb": self.peaks["RssFile:"] / 1024,
        }


def run_child(task: str, spec: dict) -> dict:
    """One measured process: this module with --child, its figures on its last stdout line."""
    command = [sys.executable, "-m", "tests.bench.large_data", "--child"]
    done = subprocess.run(
        [*command, json.dumps({"task": task, **spec})], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{task} {spec} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(spec: dict) -> dict:
    if spec["task"] == "pack":
        from model.cli import data_main

        started = time.perf_counter()
        assert data_main(["pack", spec["input"], "--out", spec["out"]]) == 0
        return {"seconds": time.perf_counter() - started}
    from model.config import TrainConfig
    from model.train import Trainer

    class TimedTrainer(Trainer):
        """Times the training passes alone (not validation, not evaluation)."""

        train_s = 0.0

        def _train_epoch(self) -> float:
            started = time.perf_counter()
            nll = super()._train_epoch()
            self.train_s += time.perf_counter() - started
            return nll

    baseline = status_kib("VmRSS:") / 1024  # python, numpy and torch imported
    started = time.perf_counter()
    config = TrainConfig(
        source=spec["source"],
        data_dir=spec["data_dir"],
        hidden_sizes=[500],
        num_masks=8,
        direct=False,
        epochs=1,
        batch_size=spec["batch_size"],
        seed=0,
    )
    trainer = TimedTrainer(config, Path(spec["out"]), progress=False)
    load_s = time.perf_counter() - started
    trainer.fit()
    rows = len(trainer.data.train)
    return {
        "rows": rows,
        "load_s": load_s,
        "train_s": trainer.train_s,
        "rows_per_s": rows / trainer.train_s,
        "baseline_mb": baseline,
        "valid_nll": trainer.best_valid,
    }


def measured(spec: dict) -> None:
    sampler = PeakSampler()
    figures = child(spec)
    print(json.dumps({**figures, **sampler.stop()}))


# -- the report -----------------------------------------------------------------------------------
def disk_gb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_500_000, help="training rows of the big set")
    parser.add_argument("--fit-rows", type=int, default=200_000, help="rows of the fitting set")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary folder goes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measured(json.loads(args.child))
        return
    folder = Path(tempfile.mkdtemp(prefix="made-large-data-", dir=args.dir))
    try:
        report(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(folder: Path, args: argparse.Namespace) -> None:
    big = folder / "big"
    started = time.perf_counter()
    generate(big, args.rows)
    print(
        f"wrote {args.rows:,} rows x {DIM} uint8 ({disk_gb(big / 'train.npy'):.2f} GB) in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    sets = fitting_sets(big, folder, args.fit_rows)
    runs = {}
    for source, path in sets.items():
        spec = {"source": source, "data_dir": str(path), "batch_size": args.batch_size}
        runs[f"{args.fit_rows:,} rows, {source}"] = (
            disk_gb(path),
            run_child("train", {**spec, "out": str(folder / f"run-{source}")}),
        )
        print(f"trained on {source}", flush=True)
    pack = run_child("pack", {"input": str(big), "out": str(folder / "big-packed")})
    spec = {"source": "files", "data_dir": str(big), "batch_size": args.batch_size}
    runs[f"{args.rows:,} rows, files (.npy)"] = (
        disk_gb(big / "train.npy"),
        run_child("train", {**spec, "out": str(folder / "run-big")}),
    )
    print(f"\nmachine: {json.dumps(machine())}")
    print(f"one epoch of MADE 1x500, K=8, batch {args.batch_size}; memory in MB")
    print(
        "| training set | train GB on disk | load + check s | train s | rows/s | "
        "peak RSS | peak anon | peak file-backed | RSS after imports | valid NLL |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (gb, r) in runs.items():
        print(
            f"| {name} | {gb:.3f} | {r['load_s']:.1f} | {r['train_s']:.0f} | "
            f"{r['rows_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['peak_anon_mb']:,.0f} | "
            f"{r['peak_file_mb']:,.0f} | {r['baseline_mb']:,.0f} | {r['valid_nll']:.1f} |"
        )
    packed_gb = disk_gb(folder / "big-packed")
    print(
        f"\nmade-data pack of the {args.rows:,}-row set: {pack['seconds']:.0f} s, "
        f"{packed_gb:.2f} GB on disk (all splits), peak RSS {pack['peak_rss_mb']:,.0f} MB"
    )


if __name__ == "__main__":
    main()
