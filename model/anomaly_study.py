"""The anomaly study of issue 17: how well the served mixture's raw score -log p(x) and Serra et
al.'s complexity-corrected score S(x) = -log p(x) - L(x) flag anomalies on binarized
Fashion-MNIST, as AUROC and as what a user cutting at a conformal p <= alpha gets (false-positive
and detection rates).

Scenarios: (a) test images with 5%, 10% and 20% of their pixels flipped, (b) one class held out
of training, (c) the test images inverted. Trained runs and artifacts are cached in ``--runs``, so
a rerun only re-scores: ``python -m model.anomaly_study --runs runs/anomaly``.
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from model.config import TrainConfig
from model.data import FASHION_MNIST_DIR, IDX_TRAIN_SIZE, SPLITS, Dataset, load_dataset, read_idx
from model.exported import ExportedMembers
from service.contract import conformal
from service.contract.artifact import Manifest, Score

log = logging.getLogger(__name__)

ALPHA = 0.05
FLIP_FRACTIONS = (0.05, 0.10, 0.20)
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Chosen before any result: the one class that is neither a garment nor footwear, so nothing
# among the other nine resembles it by kind.
HELD_OUT_CLASS = CLASS_NAMES.index("Bag")
SCORES: tuple[Score, ...] = ("log_likelihood", "complexity_corrected")
SCORE_BATCH = 1024  # rows per onnxruntime call
SEED = 0
# One modest configuration for both pools: 20 epochs of 5 to 9 s each on 2 idle cores.
CONFIG = TrainConfig(
    source="fashion-mnist",
    hidden_sizes=[500],
    num_masks=4,
    direct=True,
    epochs=20,
    batch_size=100,
    learning_rate=1e-3,
    lr_schedule="cosine",
    seed=SEED,
)


@dataclass(frozen=True)
class Detection:
    """One score on one scenario: ranking quality, and what cutting at p <= alpha does."""

    auroc: float  # anomalies positive, ranked by -typicality
    false_positive_rate: float  # share of normal rows with p <= alpha
    detection_rate: float  # share of anomalies with p <= alpha


# -- scoring -------------------------------------------------------------------------------------
def typicality(members: ExportedMembers, rows: np.ndarray) -> dict[Score, np.ndarray]:
    """Both scores of ``rows`` [N, D], low = unusual, as the artifact's calibration stores them:
    the served mixture's log p(x), and log p(x) + L(x) = -S(x)."""
    log_likelihood = np.concatenate(
        [
            members.mixture(members.member_log_probs(rows[i : i + SCORE_BATCH]))
            for i in range(0, len(rows), SCORE_BATCH)
        ]
    )
    return {
        "log_likelihood": log_likelihood,
        "complexity_corrected": conformal.complexity_corrected(log_likelihood, rows),
    }


def calibration_of(manifest: Manifest) -> dict[Score, np.ndarray]:
    """The artifact's held-out mixture scores per score, ascending."""
    if manifest.calibration is None:
        raise ValueError(f"artifact {manifest.name} holds no calibration rows")
    scores = manifest.calibration.scores["mixture"]
    return {score: np.asarray(scores[score], dtype=np.float64) for score in SCORES}


def detection(
    normal: np.ndarray, anomalous: np.ndarray, calibration: np.ndarray, alpha: float
) -> Detection:
    """AUROC and the rates at ``alpha`` of one score's typicalities (low = unusual)."""
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    auroc = roc_auc_score(labels, -np.r_[normal, anomalous])
    return Detection(
        auroc=float(auroc),
        false_positive_rate=float(np.mean(conformal.p_values(calibration, normal) <= alpha)),
        detection_rate=float(np.mean(conformal.p_values(calibration, anomalous) <= alpha)),
    )


def scenario(
    name: str,
    model: str,
    normal: dict[Score, np.ndarray],
    anomalous: dict[Score, np.ndarray],
    calibration: dict[Score, np.ndarray],
    alpha: float,
) -> dict[str, object]:
    """One scenario's figures: each score's Detection, and the mean -log p and L (nats) of both
    groups, which say why a score ranks the way it does."""

    def means(scores: dict[Score, np.ndarray]) -> dict[str, float]:
        nll = -scores["log_likelihood"]
        return {
            "nll": float(nll.mean()),
            "complexity": float((scores["complexity_corrected"] + nll).mean()),
        }

    return {
        "scenario": name,
        "model": model,
        "normal_rows": len(normal["log_likelihood"]),
        "anomalous_rows": len(anomalous["log_likelihood"]),
        "normal_means": means(normal),
        "anomalous_means": means(anomalous),
        **{
            score: asdict(detection(normal[score], anomalous[score], calibration[score], alpha))
            for score in SCORES
        },
    }


# -- anomalies -----------------------------------------------------------------------------------
def flip_pixels(rows: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``rows`` with exactly round(fraction * D) pixels of each row flipped, chosen uniformly."""
    count = round(fraction * rows.shape[1])
    chosen = np.argpartition(rng.random(rows.shape), count - 1, axis=1)[:, :count]
    flipped = rows.copy()
    every = np.arange(len(rows))[:, None]
    flipped[every, chosen] = 1 - flipped[every, chosen]
    return flipped


def fashion_labels(folder: Path = FASHION_MNIST_DIR) -> dict[str, np.ndarray]:
    """Class labels per split of the loader's Fashion-MNIST splits."""

    def labels(stem: str) -> np.ndarray:
        return read_idx(next(folder.glob(f"{stem}-labels-idx1-ubyte*")))

    train = labels("train")
    return {
        "train": train[:IDX_TRAIN_SIZE],
        "valid": train[IDX_TRAIN_SIZE:],
        "test": labels("t10k"),
    }


def write_without_class(
    data: Dataset, labels: dict[str, np.ndarray], held_out: int, folder: Path
) -> Path:
    """train/valid/test .npy files of every class but ``held_out``: source ``files`` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        kept = data.split(split)[labels[split] != held_out]
        np.save(folder / f"{split}.npy", kept.astype(np.uint8))
    return folder


# -- runs ----------------------------------------------------------------------------------------
def pool(config: TrainConfig, folder: Path) -> tuple[ExportedMembers, dict[str, object]]:
    """The trained and exported pool cached in ``folder`` (trained there if absent), and what it
    cost."""
    from model.study import artifact_for, train_or_load

    trained = train_or_load(config, folder / "run")
    members = artifact_for(trained, folder / "artifact")
    info = {
        "run": str(folder / "run"),
        "train_seconds": trained.report.train_seconds,
        "epochs_run": trained.report.epochs_run,
        "test_nll": trained.report.test.shipped_mixture,
        "split_sizes": trained.dataset_info.split_sizes,
    }
    return members, info


def run_study(
    runs: Path, held_out: int = HELD_OUT_CLASS, alpha: float = ALPHA, config: TrainConfig = CONFIG
) -> dict:
    """Train or reuse both pools of ``config``, score every scenario; returns the JSON-able
    results."""
    data = load_dataset("fashion-mnist")
    labels = fashion_labels()
    held_name = CLASS_NAMES[held_out]
    results: dict[str, object] = {"alpha": alpha, "held_out_class": [held_out, held_name]}

    full, full_info = pool(config, runs / "fashion-mnist")
    started = time.perf_counter()
    calibration = calibration_of(full.manifest)
    log.info("scoring the clean test images")
    clean = typicality(full, data.test)
    rng = np.random.default_rng(SEED)
    flips = []
    for fraction in FLIP_FRACTIONS:
        log.info("scoring the test images with %.0f%% of pixels flipped", 100 * fraction)
        flipped = typicality(full, flip_pixels(data.test, fraction, rng))
        name = f"(a) {100 * fraction:.0f}% pixels flipped"
        flips.append(scenario(name, "all classes", clean, flipped, calibration, alpha))
    log.info("scoring the inverted test images")
    inverted = typicality(full, 1 - data.test)
    inversion = scenario("(c) inverted", "all classes", clean, inverted, calibration, alpha)
    full_info["score_seconds"] = round(time.perf_counter() - started, 1)

    folder = runs / f"without-{held_out}"
    files = write_without_class(data, labels, held_out, folder / "data")
    nine, nine_info = pool(replace(config, source="files", data_dir=str(files.resolve())), folder)
    started = time.perf_counter()
    log.info("scoring the held-out class %s against the other classes' test images", held_name)
    others = typicality(nine, data.test[labels["test"] != held_out])
    held = typicality(nine, data.test[labels["test"] == held_out])
    model = f"without {held_name}"
    name = f"(b) class {held_out} ({held_name}) held out"
    novelty = scenario(name, model, others, held, calibration_of(nine.manifest), alpha)
    nine_info["score_seconds"] = round(time.perf_counter() - started, 1)

    results["config"] = config.to_dict()
    results["models"] = {"all classes": full_info, model: nine_info}
    results["scenarios"] = [*flips, novelty, inversion]
    return results


# -- report --------------------------------------------------------------------------------------
def table(results: dict) -> str:
    """Markdown tables: the detection figures, then the group means behind them."""
    alpha = results["alpha"]
    lines = [
        "| scenario | model | normal / anomalous rows | AUROC raw | AUROC corrected "
        "| FPR raw | FPR corrected | detection raw | detection corrected |",
        "|" + "---|" * 9,
    ]
    for s in results["scenarios"]:
        raw, corrected = s["log_likelihood"], s["complexity_corrected"]
        lines.append(
            f"| {s['scenario']} | {s['model']} | {s['normal_rows']:,} / {s['anomalous_rows']:,} "
            f"| {raw['auroc']:.3f} | {corrected['auroc']:.3f} "
            f"| {raw['false_positive_rate']:.3f} | {corrected['false_positive_rate']:.3f} "
            f"| {raw['detection_rate']:.3f} | {corrected['detection_rate']:.3f} |"
        )
    lines += [
        "",
        f"FPR and detection: share of normal rows and of anomalies with a conformal p <= {alpha} "
        "against the artifact's calibration rows. Mean nats per image:",
        "",
        "| scenario | -log p normal | -log p anomalous | L normal | L anomalous |",
        "|" + "---|" * 5,
    ]
    for s in results["scenarios"]:
        normal, anomalous = s["normal_means"], s["anomalous_means"]
        lines.append(
            f"| {s['scenario']} | {normal['nll']:.1f} | {anomalous['nll']:.1f} "
            f"| {normal['complexity']:.1f} | {anomalous['complexity']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# -- command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anomaly-study", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="cache of runs and artifacts")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for table, JSON")
    parser.add_argument("--held-out", type=int, default=HELD_OUT_CLASS, choices=range(10))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    results = run_study(args.runs, args.held_out)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["date"] = datetime.now(UTC).date().isoformat()
    results["command"] = " ".join(["python -m model.anomaly_study", *(argv or sys.argv[1:])])
    text = table(results)
    print(text)
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    (args.out / "figures" / "anomaly-study.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "anomaly-study.md").write_text(
        f"# Anomaly scores on binarized Fashion-MNIST\n\n`{results['command']}` "
        f"({results['date']}, {results['seconds']:.0f} s)\n\n{text}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
