"""Command lines: ``made-train`` (fit a mask pool; ``torchrun -m model.cli`` runs it in several
processes), ``made-export`` (write the artifact) and ``made-data`` (pack binary rows 1 bit each)."""

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from model.config import PRESETS, preset
from model.data import DataError
from service.contract.masks import OrderingMode

if TYPE_CHECKING:  # model.train imports torch; the CLIs load it only when they run
    from model.train import TrainingReport


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated widths: {exc}") from exc
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError("--hidden widths must be positive")
    return sizes


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="made-train", description="Train a pool of MADE masks (an ensemble of orderings)."
    )
    parser.add_argument(
        "--preset",
        default="digits",
        choices=sorted(PRESETS),
        help="starting configuration; the options below override it",
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument(
        "--source",
        help="digits, fashion-mnist, mnist, idx, npz, files or packed (0/1 rows); digits-levels, "
        "digits-levels-categorical, fashion-mnist-8bit, mnist-8bit or idx-8bit (grey levels); "
        "files with a schema file or levels; table (CSV/Parquet with a header), randhie, fair, "
        "wine or breast-cancer (built-in tables)",
    )
    parser.add_argument(
        "--data-dir",
        help="IDX folder, .npz file, .npy/.csv file or folder, a folder of packed bits, or a "
        ".csv/.parquet table or folder of them",
    )
    parser.add_argument(
        "--missing",
        choices=["refuse", "drop"],
        help="a table's rows with a missing cell: refuse them (default) or drop them",
    )
    parser.add_argument(
        "--hidden",
        type=_hidden_sizes,
        dest="hidden_sizes",
        help="hidden layer widths, e.g. 500 or 500,500",
    )
    parser.add_argument("--masks", type=int, dest="num_masks", help="K, the pool size")
    parser.add_argument("--ordering", choices=get_args(OrderingMode))
    parser.add_argument(
        "--direct",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="direct input-to-output connections",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--batch-size", type=int, help="the global batch, split evenly over torchrun's processes"
    )
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"])
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument(
        "--dropout", type=float, help="share of hidden units dropped in each training step"
    )
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    parser.add_argument(
        "--valid-every", type=int, help="validate every this many epochs (and at the last)"
    )
    parser.add_argument(
        "--member-schedule", choices=["cycle", "sample"], help="which member each minibatch trains"
    )
    parser.add_argument("--em-alpha", type=float, help="Dirichlet prior of the EM weights")
    parser.add_argument(
        "--calibration-fraction",
        type=float,
        help="share of the validation rows held out for conformal p-values (default 0.5; 0: none)",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: bfloat16 autocast on the forward pass (weights and artifacts stay float32)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def format_report(report: "TrainingReport") -> str:
    lines = [f"{'split':<6} {'best member':>12} {'mean member':>12} {'uniform':>9} {'EM':>9}"]
    for split, r in (("valid", report.valid), ("test", report.test)):
        members = r.members
        lines.append(
            f"{split:<6} {min(members):>12.3f} {sum(members) / len(members):>12.3f} "
            f"{r.uniform_mixture:>9.3f} {r.em_mixture:>9.3f}"
        )
    lines.append(
        f"NLL in nats per example; shipped weights: {report.weights_kind}; "
        f"{report.epochs_run} epochs in {report.train_seconds / 60:.1f} min"
    )
    return "\n".join(lines)


def train_main(argv: list[str] | None = None) -> int:
    """One training process; under torchrun (RANK, WORLD_SIZE and LOCAL_RANK set), one rank of a
    data-parallel run, of which rank 0 alone logs, prints and writes."""
    from model.distributed import launched_ranks, process_group
    from model.train import Trainer

    args = train_parser().parse_args(argv)
    rank, world_size, _ = launched_ranks()
    logging.basicConfig(
        level=logging.WARNING if args.quiet or rank else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    overrides = {
        name: getattr(args, name)
        for name in (
            "source",
            "data_dir",
            "hidden_sizes",
            "num_masks",
            "ordering",
            "direct",
            "epochs",
            "batch_size",
            "learning_rate",
            "lr_schedule",
            "weight_decay",
            "dropout",
            "patience",
            "valid_every",
            "member_schedule",
            "em_alpha",
            "seed",
            "calibration_fraction",
            "missing",
        )
    }
    try:
        config = preset(args.preset, **overrides)
        with process_group(args.device) as dist:
            trainer = Trainer(
                config, args.out, progress=not args.quiet, dist=dist, precision=args.precision
            )
            if args.resume:
                trainer.resume()
            trained = trainer.fit()
    except (DataError, ValueError, FileNotFoundError) as exc:
        where = f" (rank {rank} of {world_size})" if world_size > 1 else ""
        print(f"made-train{where}: error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(format_report(trained.report))
        print(f"model written to {args.out / 'model.pt'}")
    return 0


def export_main(argv: list[str] | None = None) -> int:
    from model.export import ExportError, export
    from model.train import load_trained

    parser = argparse.ArgumentParser(
        prog="made-export", description="Export a trained pool to model.onnx + manifest.json."
    )
    parser.add_argument(
        "checkpoint", type=Path, help="model.pt written by made-train, or its run dir"
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    parser.add_argument(
        "--prune", action="store_true", help="drop members of zero mixture weight from the graph"
    )
    parser.add_argument(
        "--product",
        action="store_true",
        help="estimate the product of experts' log Z for combination=product (minutes on D=784)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress log")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        manifest, gap = export(
            load_trained(args.checkpoint), args.out, prune=args.prune, product=args.product
        )
    except (ExportError, DataError, FileNotFoundError) as exc:
        print(f"made-export: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out} ({manifest.name}, {manifest.onnx.num_bytes / 1e6:.1f} MB, "
        f"sha256 {manifest.onnx.sha256[:12]}, largest onnxruntime-float64 gap {gap:.1e} nats, "
        f"test NLL {manifest.metrics['test'].shipped_mixture:.3f})"
    )
    calibration = manifest.calibration
    print(
        f"p-values rank against {len(calibration.rows):,} held-out calibration rows"
        if calibration
        else "no calibration rows (trained with --calibration-fraction 0): p-values are refused"
    )
    return 0


def data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="made-data", description="Prepare binary training data for made-train."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser(
        "pack",
        help="write a source's splits packed 1 bit per entry (made-train --source packed)",
        description="Read a data source's train/valid/test splits a chunk at a time and write "
        "them packed 1 bit per entry, with packed.json naming D and the row counts.",
    )
    pack.add_argument(
        "input",
        nargs="?",
        help="a .npy/.csv file (split 80/10/10 as --source files does), a folder of "
        "train/valid/test .npy/.csv files, a .npz (MADE format) or an IDX folder",
    )
    pack.add_argument("--out", type=Path, required=True, help="folder to write")
    pack.add_argument(
        "--source", help="the input's source (default: npz for a .npz file, else files)"
    )
    return parser


def data_main(argv: list[str] | None = None) -> int:
    from model.data import load_dataset
    from model.packed import PackedError, write_packed

    args = data_parser().parse_args(argv)
    source = args.source or ("npz" if str(args.input).endswith(".npz") else "files")
    try:
        data = load_dataset(source, Path(args.input) if args.input else None)
        if data.schema is not None:  # packing keeps one bit an entry
            raise DataError(
                f"{data.location or data.name} holds levels ({data.schema.describe()}), not "
                "0/1 rows: made-data pack stores bits only; train on the source directly"
            )
        splits = {split: data.split(split) for split in ("train", "valid", "test")}
        sidecar = write_packed(
            splits,
            args.out,
            binarization=data.binarization,
            image_shape=data.image_shape,
            packed_from={"source": data.name, "location": data.location},
        )
    except (DataError, PackedError, OSError) as exc:
        print(f"made-data: error: {exc}", file=sys.stderr)
        return 2
    rows = sidecar["rows"]
    sizes = ", ".join(f"{split} {count:,}" for split, count in rows.items())
    packed_bytes = sum(f.stat().st_size for f in args.out.glob("*.bits"))
    as_float = sum(rows.values()) * sidecar["dim"] * 4
    print(
        f"packed {sizes} rows of D={sidecar['dim']} into {args.out} "
        f"({packed_bytes / 1e6:,.1f} MB; {as_float / 1e6:,.1f} MB as float32); "
        f"train with: made-train --source packed --data-dir {args.out}"
    )
    return 0


if __name__ == "__main__":  # torchrun --nproc-per-node N -m model.cli ... (or python -m model.cli)
    sys.exit(train_main())
