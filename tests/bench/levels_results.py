"""Grey-level results: made-serve's ordinal MADE on digits at 17 levels and on Fashion-MNIST at 8
bits, beside baselines trained on the same splits by the same command:

    python -m tests.bench.levels_results [--sets digits-levels fashion-mnist-8bit]

For each set: K = 1 and the preset's K (exported; uniform and EM mixture, and, where export
estimated it, the normalised product with its conservative bound), an independent per-pixel
histogram (a categorical per pixel, add-alpha smoothed, alpha chosen on validation), and for
digits the same MADE with a categorical (softmax over the 17 levels) output per pixel. Test NLL
in nats per image and bits per dimension; every choice is made on the validation split.

Fashion-MNIST 8-bit exports without the product: its normaliser's importance weights are too
heavy-tailed for the mixture as proposal (the first 10,000 exact draws: relative standard error
59%, effective sample size 3; docs/results.md section 6).
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from model.data import load_dataset
from service.inference.engine import Engine
from tests.bench.common import RESULTS, machine

BIN = Path(sys.executable).parent
CHUNK = 500
SMOOTHING = (0.01, 0.1, 0.5, 1.0, 2.0)


# (label, preset, source override, extra made-train options, export with --product)
RUNS = {
    "digits-levels": [
        ("ordinal MADE, K = 8", "digits-levels", None, [], True),
        ("ordinal MADE, K = 1", "digits-levels", None, ["--masks", "1"], False),
        ("categorical MADE, K = 8", "digits-levels", "digits-levels-categorical", [], True),
    ],
    "fashion-mnist-8bit": [
        ("ordinal MADE, K = 8", "fashion-mnist-8bit", None, [], False),
        ("ordinal MADE, K = 1", "fashion-mnist-8bit", None, ["--masks", "1"], False),
    ],
}


def histogram(name: str) -> dict:
    """Independent per-pixel categoricals, add-alpha smoothed; alpha chosen on validation."""
    data = load_dataset(name)
    levels = data.schema.levels
    train = np.asarray(data.train).astype(np.int64)

    def nll(rows: np.ndarray, alpha: float) -> float:
        rows = np.asarray(rows).astype(np.int64)
        total = 0.0
        for d, count in enumerate(levels):
            counts = np.bincount(train[:, d], minlength=count) + alpha
            log_p = np.log(counts / counts.sum())
            total += log_p[rows[:, d]].sum()
        return -total / len(rows)

    alpha = min(SMOOTHING, key=lambda a: nll(data.valid, a))
    return {"valid": nll(data.valid, alpha), "test": nll(data.test, alpha), "alpha": alpha}


def nll_of(engine: Engine, rows: np.ndarray) -> dict[str, float]:
    """Mean NLL (nats) of ``rows`` under the artifact's mixture, and its product if exported."""
    members = np.concatenate(
        [engine.member_log_probs(rows[i : i + CHUNK]) for i in range(0, len(rows), CHUNK)]
    )
    figures = {"mixture": float(-engine.mixture(members).mean())}
    normaliser = engine.manifest.product_normaliser
    if normaliser is not None:
        product = float(-engine.product(members).mean())
        figures["product"] = product
        figures["product_bound"] = product + normaliser.upper_bound - normaliser.log_z
    return figures


def made_run(
    scratch: Path, label: str, preset: str, source: str | None, extra: list, product: bool
):
    run, artifact = scratch / f"run-{len(list(scratch.iterdir()))}", scratch / "artifact"
    command = [str(BIN / "made-train"), "--preset", preset, *extra, "--out", str(run), "--quiet"]
    if source:
        command += ["--source", source]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    trained = time.perf_counter() - started
    export = [str(BIN / "made-export"), str(run / "model.pt"), "--out", str(artifact)]
    subprocess.run([*export, *(["--product"] if product else [])], check=True, capture_output=True)
    exported = time.perf_counter() - started
    engine = Engine.load(artifact)
    data = load_dataset(engine.manifest.data.source)
    report = json.loads((run / "report.json").read_text())
    figures = {split: nll_of(engine, np.asarray(data.split(split))) for split in ("valid", "test")}
    return {
        "label": label,
        "members": engine.num_members,
        "uniform": {s: report[s]["uniform_mixture"] for s in ("valid", "test")},
        "em": {s: report[s]["em_mixture"] for s in ("valid", "test")},
        "valid": figures["valid"],
        "test": figures["test"],
        "train_minutes": trained / 60,
        "export_minutes": (exported - trained) / 60,
    }


def table(name: str, dim: int, runs: list[dict], baseline: dict) -> str:
    bits = 1 / (dim * math.log(2))
    lines = [
        f"**{name}** (D = {dim}; test NLL in nats per image, bits/dim in brackets; valid in "
        "the last column chooses)",
        "",
        "| model | uniform mixture | EM mixture | product (bound) | chosen on valid: test | "
        "train + export min |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        t = r["test"]
        product = (
            f"{t['product']:.2f} [{t['product'] * bits:.3f}] ({t['product_bound']:.2f})"
            if "product" in t
            else "not exported"
        )
        options = {"uniform": r["uniform"], "em": r["em"]}
        if "product" in r["valid"]:
            options["product"] = {"valid": r["valid"]["product"], "test": t["product"]}
        chosen = min(options, key=lambda c: options[c]["valid"])
        best = options[chosen]["test"]
        lines.append(
            f"| {r['label']} | {r['uniform']['test']:.2f} [{r['uniform']['test'] * bits:.3f}] | "
            f"{r['em']['test']:.2f} [{r['em']['test'] * bits:.3f}] | {product} | "
            f"{chosen}: **{best:.2f}** [{best * bits:.3f}] | "
            f"{r['train_minutes']:.1f} + {r['export_minutes']:.1f} |"
        )
    lines.append(
        f"| per-pixel histogram (alpha {baseline['alpha']}) | {baseline['test']:.2f} "
        f"[{baseline['test'] * bits:.3f}] | | | | 0.0 |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    texts, results = [], {}
    for name in args.sets:
        with tempfile.TemporaryDirectory(prefix=f"made-{name}-") as scratch:
            runs = []
            for spec in RUNS[name]:
                print(f"{name}: {spec[0]} ...", flush=True)
                runs.append(made_run(Path(scratch), *spec))
        baseline = histogram(name)
        dim = load_dataset(name).dim
        results[name] = {"runs": runs, "histogram": baseline, "dim": dim}
        texts.append(table(name, dim, runs, baseline))
        print(texts[-1], flush=True)
    print("\n\n".join(texts) + f"\n\n{machine()}")
    # Sets measured by earlier runs stay: --sets reruns some without losing the others.
    RESULTS.mkdir(exist_ok=True)
    store = RESULTS / "levels.json"
    everything = json.loads(store.read_text()) if store.exists() else {}
    everything.update(results)
    store.write_text(json.dumps(everything, indent=2) + "\n")
    tables = [table(name, r["dim"], r["runs"], r["histogram"]) for name, r in everything.items()]
    (RESULTS / "levels.md").write_text("\n\n".join(tables) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
