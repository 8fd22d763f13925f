"""Tabular results: made-serve's MADE with mixture-of-Gaussian conditionals on the built-in
tables, beside scikit-learn's GaussianMixture and KernelDensity on the same splits:

    python -m tests.bench.tabular_results [--tables randhie fair wine breast-cancer]

For each table, test average log-likelihood in nats per row (higher is better), every choice made
on the validation split:

- the whole table (every column, its own family): made-serve K = 1 and the preset's K (uniform
  and EM mixture, and the normalised product with its conservative bound);
- its continuous columns only, the subset the baselines model: made-serve (the preset's K)
  trained on that subset, a full-covariance GaussianMixture (components chosen on validation)
  and a Gaussian KernelDensity (bandwidth chosen on validation), both fitted on the columns
  standardized with the training mean and scale, their log densities brought back to the data's
  units (minus the sum of the log scales), as made-serve reports them.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity

from model.data import load_dataset
from service.contract.schema import GAUSSIAN_MIN_LOG_SCALE
from service.contract.schema import GaussianMixture as GaussianColumn
from service.inference.engine import Engine
from tests.bench.common import RESULTS, machine
from tests.bench.levels_results import nll_of

BIN = Path(sys.executable).parent
TABLES = ("randhie", "fair", "wine", "breast-cancer")
COMPONENTS = (1, 2, 4, 8, 16, 32)
BANDWIDTHS = tuple(np.geomspace(0.05, 2.0, 14))


def made_run(scratch: Path, preset: str, extra: list[str], product: bool) -> dict:
    """Train and export one configuration; its figures as log-likelihoods (nats per row)."""
    run = scratch / f"run-{len(list(scratch.iterdir()))}"
    artifact = run.with_name(run.name + "-artifact")
    started = time.perf_counter()
    command = [str(BIN / "made-train"), "--preset", preset, *extra, "--out", str(run), "--quiet"]
    subprocess.run(command, check=True)
    trained = time.perf_counter() - started
    export = [str(BIN / "made-export"), str(run / "model.pt"), "--out", str(artifact), "--quiet"]
    subprocess.run([*export, *(["--product"] if product else [])], check=True)
    exported = time.perf_counter() - started - trained
    engine = Engine.load(artifact)
    report = json.loads((run / "report.json").read_text())
    data = _data_of(extra, engine)
    figures = {s: nll_of(engine, np.asarray(data.split(s))) for s in ("valid", "test")}
    options = {
        "uniform": {s: report[s]["uniform_mixture"] for s in ("valid", "test")},
        "em": {s: report[s]["em_mixture"] for s in ("valid", "test")},
    }
    if "product" in figures["valid"]:
        options["product"] = {s: figures[s]["product"] for s in ("valid", "test")}
    chosen = min(options, key=lambda c: options[c]["valid"])
    return {
        "members": engine.num_members,
        # Log-likelihoods: the NLLs negated.
        **{name: -option["test"] for name, option in options.items()},
        "product_bound": -figures["test"]["product_bound"] if product else None,
        "chosen": chosen,
        "chosen_test": -options[chosen]["test"],
        "train_s": trained,
        "export_s": exported,
    }


def _data_of(extra: list[str], engine: Engine):
    """The splits a run trained on: its --data-dir when it has one, else its preset's source."""
    if "--data-dir" in extra:
        return load_dataset("files", Path(extra[extra.index("--data-dir") + 1]))
    return load_dataset(engine.manifest.data.source)


def continuous_subset(name: str, folder: Path) -> tuple[Path, list[int]]:
    """The table's continuous columns as a files source (train/valid/test .npy + schema.json)."""
    data = load_dataset(name)
    columns = [d for d, dim in enumerate(data.schema.dimensions) if isinstance(dim, GaussianColumn)]
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        np.save(folder / f"{split}.npy", np.asarray(data.split(split))[:, columns])
    schema = {"columns": [data.schema.dimensions[d].model_dump(exclude_none=True) for d in columns]}
    (folder / "schema.json").write_text(json.dumps(schema))
    return folder, columns


def baselines(name: str, columns: list[int]) -> dict:
    """GaussianMixture and KernelDensity on the standardized continuous columns, chosen on
    validation; test log-likelihoods in the data's units."""
    data = load_dataset(name)
    splits = {
        s: np.asarray(data.split(s), dtype=np.float64)[:, columns]
        for s in ("train", "valid", "test")
    }
    mean, scale = splits["train"].mean(axis=0), splits["train"].std(axis=0)
    z = {s: (rows - mean) / scale for s, rows in splits.items()}
    jacobian = float(np.log(scale).sum())
    gmm, gmm_s = _gaussian_mixture(z, 1e-6)  # scikit-learn's default floor
    # Components no narrower than made-serve's (e^GAUSSIAN_MIN_LOG_SCALE of a column's scale):
    # on columns of few distinct values (counts, ratings) a free mixture puts spikes on them.
    floored, floored_s = _gaussian_mixture(z, float(np.exp(2 * GAUSSIAN_MIN_LOG_SCALE)))
    started = time.perf_counter()
    kernels = {b: KernelDensity(bandwidth=b).fit(z["train"]) for b in BANDWIDTHS}
    best_b = max(kernels, key=lambda b: kernels[b].score_samples(z["valid"]).mean())
    kde_s = time.perf_counter() - started
    return {
        "gmm": float(gmm.score(z["test"])) - jacobian,
        "gmm_components": gmm.n_components,
        "gmm_s": gmm_s,
        "gmm_floored": float(floored.score(z["test"])) - jacobian,
        "gmm_floored_components": floored.n_components,
        "gmm_floored_s": floored_s,
        "kde": float(kernels[best_b].score_samples(z["test"]).mean()) - jacobian,
        "kde_bandwidth": float(best_b),
        "kde_s": kde_s,
    }


def _gaussian_mixture(z: dict[str, np.ndarray], reg_covar: float) -> tuple[GaussianMixture, float]:
    """The full-covariance mixture whose number of components scores best on validation."""
    started = time.perf_counter()
    fitted = [
        GaussianMixture(n, covariance_type="full", reg_covar=reg_covar, random_state=0).fit(
            z["train"]
        )
        for n in COMPONENTS
        if n < len(z["train"]) // 2
    ]
    best = max(fitted, key=lambda mixture: mixture.score(z["valid"]))
    return best, time.perf_counter() - started


def markdown(name: str, r: dict) -> str:
    def made(run: dict) -> str:
        product = (
            f"{run['product']:.3f} ({run['product_bound']:.3f})"
            if run.get("product_bound")
            else "-"
        )
        return (
            f"{run['uniform']:.3f} | {run['em']:.3f} | {product} | {run['chosen']}: "
            f"**{run['chosen_test']:.3f}** | {run['train_s']:.0f} + {run['export_s']:.0f}"
        )

    b = r["baselines"]
    header = (
        "| model | uniform mixture | EM mixture | product (bound) | chosen on valid: test | "
        "train + export s |\n|---|---|---|---|---|---|"
    )
    return "\n".join(
        [
            f"**{name}** ({r['rows']} rows: train/valid/test {r['splits']}; D = {r['dim']}, of "
            f"which {len(r['continuous'])} continuous; test log-likelihood in nats per row, "
            "higher is better)",
            "",
            header,
            f"| made-serve, whole table, K = 1 | {made(r['single'])} |",
            f"| made-serve, whole table, K = {r['shipped']['members']} | {made(r['shipped'])} |",
            f"| made-serve, continuous columns, K = {r['subset']['members']} | "
            f"{made(r['subset'])} |",
            f"| GaussianMixture, full covariance ({b['gmm_components']} components), continuous "
            f"columns | | | | **{b['gmm']:.3f}** | {b['gmm_s']:.0f} |",
            f"| GaussianMixture, full covariance ({b['gmm_floored_components']} components, none "
            f"narrower than made-serve's), continuous columns | | | | **{b['gmm_floored']:.3f}** | "
            f"{b['gmm_floored_s']:.0f} |",
            f"| KernelDensity, Gaussian (bandwidth {b['kde_bandwidth']:.3g} in standard units), "
            f"continuous columns | | | | **{b['kde']:.3f}** | {b['kde_s']:.0f} |",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="*", default=list(TABLES), choices=TABLES)
    args = parser.parse_args()
    results = {}
    for name in args.tables:
        preset = f"table-{name}"
        data = load_dataset(name)
        with tempfile.TemporaryDirectory(prefix=f"made-{name}-") as scratch:
            root = Path(scratch)
            (root / "runs").mkdir()
            print(f"{name}: whole table, K = 1 ...", flush=True)
            single = made_run(root / "runs", preset, ["--masks", "1"], product=False)
            print(f"{name}: whole table, the preset's K ...", flush=True)
            shipped = made_run(root / "runs", preset, [], product=True)
            folder, columns = continuous_subset(name, root / "subset")
            print(f"{name}: continuous columns ({len(columns)}) ...", flush=True)
            subset = made_run(
                root / "runs", preset, ["--source", "files", "--data-dir", str(folder)], True
            )
        results[name] = {
            "rows": sum(data.split_sizes().values()),
            "splits": "/".join(str(len(data.split(s))) for s in ("train", "valid", "test")),
            "dim": data.dim,
            "continuous": columns,
            "single": single,
            "shipped": shipped,
            "subset": subset,
            "baselines": baselines(name, columns),
        }
        print(markdown(name, results[name]), flush=True)
    print("\n\n".join(markdown(n, r) for n, r in results.items()) + f"\n\n{machine()}")
    RESULTS.mkdir(exist_ok=True)
    store = RESULTS / "tabular.json"
    everything = json.loads(store.read_text()) if store.exists() else {}
    everything.update(results)
    store.write_text(json.dumps(everything, indent=2) + "\n")
    (RESULTS / "tabular.md").write_text(
        "\n\n".join(markdown(n, r) for n, r in everything.items()) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
