"""Training speed against karpathy/pytorch-made, side by side in one process on binarized MNIST.

``python -m tests.bench.epoch_time --data ../shared/data/binarized_mnist.npz --karpathy DIR``
where DIR is a checkout of https://github.com/karpathy/pytorch-made (its ``run.py`` and
``made.py``; never part of this repository). Each round times one training epoch (50,000 rows,
batch 100, Adam) of made-serve's trainer and of pytorch-made's own ``run_epoch('train')`` on the
same network, alternating A, B, A, B so the machine's drift falls on both; the table gives the
median seconds per epoch and the ratio. pytorch-made has no direct connections, so the shared rows
run without them; the last row is the chosen preset itself, for reference.
"""

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from model.config import TrainConfig, preset
from model.distributed import process_group
from model.train import Trainer

# pytorch-made resamples a multi-mask pool's masks every 20 steps by default (its -r).
KARPATHY_RESAMPLE_EVERY = 20


def our_epoch(config: TrainConfig) -> float:
    """Seconds for one training epoch of made-serve's trainer (validation not included)."""
    with tempfile.TemporaryDirectory() as out, process_group("cpu") as dist:
        trainer = Trainer(config, Path(out), progress=False, dist=dist)
        start = time.perf_counter()
        trainer._train_epoch()
        return time.perf_counter() - start


def karpathy_epoch(checkout: Path, data: Path, hidden: list[int], masks: int) -> float:
    """Seconds for one ``run_epoch('train')`` of pytorch-made's run.py, on the CPU."""
    if not hasattr(torch._C, "set_grad_enabled"):  # run.py calls it; torch 2.x renamed it
        torch._C.set_grad_enabled = torch._C._set_grad_enabled
    sys.path.insert(0, str(checkout))
    try:
        run = importlib.import_module("run")
        made = importlib.import_module("made")
    finally:
        sys.path.remove(str(checkout))
    arrays = np.load(data)
    train = torch.from_numpy(arrays["train_data"])
    run.xtr, run.xte = train, torch.from_numpy(arrays["valid_data"])
    run.args = SimpleNamespace(samples=1, resample_every=KARPATHY_RESAMPLE_EVERY)
    run.model = made.MADE(train.size(1), hidden, train.size(1), num_masks=masks)
    run.opt = torch.optim.Adam(run.model.parameters(), 1e-3, weight_decay=1e-4)
    start = time.perf_counter()
    run.run_epoch("train")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="binarized_mnist.npz")
    parser.add_argument("--karpathy", type=Path, required=True, help="pytorch-made checkout")
    parser.add_argument("--preset", default="mnist-paper", help="the chosen configuration")
    parser.add_argument("--rounds", type=int, default=2, help="epochs timed per row and side")
    args = parser.parse_args()
    chosen = preset(args.preset, source="npz", data_dir=str(args.data))
    shared = [(chosen.hidden_sizes, 1), (chosen.hidden_sizes, chosen.num_masks)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds")
    print("| network | masks | made-serve s/epoch | pytorch-made s/epoch | ratio |")
    print("|---|---|---:|---:|---:|")
    for hidden, masks in shared:
        ours_config = replace(chosen, num_masks=masks, direct=False, dropout=0.0)
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(our_epoch(ours_config))
            theirs.append(karpathy_epoch(args.karpathy, args.data, hidden, masks))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {hidden} no direct | {masks} | {a:.1f} | {b:.1f} | {a / b:.2f} |", flush=True)
    own = statistics.median(our_epoch(chosen) for _ in range(args.rounds))
    print(
        f"| {args.preset} (direct, dropout {chosen.dropout}) | {chosen.num_masks} | {own:.1f} "
        "| - | - |"
    )


if __name__ == "__main__":
    main()
