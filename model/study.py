"""The seed's three questions measured (issue 8): how many masks, learned sparse weights, and the
product of experts with an honest normaliser, plus the logit-averaging figure public code reports.

One command trains (or reuses) the pools, evaluates them, and writes ``study-<source>.json``,
``study-<source>.md`` (tables) and PNG figures: ``python -m model.study --out docs --preset quick``.
"""

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.config import TrainConfig, preset
from model.exported import ExportedMembers
from model.normaliser import (
    estimate_log_normaliser,
    logit_average_log_prob,
    logit_average_sampler,
    product_sampler,
)
from service.contract.mixture import fit_em_weights, mixture_log_prob, product_log_unnormalised

if TYPE_CHECKING:
    from model.train import TrainedModel

log = logging.getLogger(__name__)

ALPHAS = (1.0, 0.5, 0.1, 0.01)
EVAL_BATCH = 500  # rows per onnxruntime call: logits are [B, K, D]
PRUNE_TOLERANCE = 0.1  # nats of valid NLL a pruned subset may give up


@dataclass(frozen=True)
class PoolStudy:
    """One source's sweep: pools of ``pool_sizes`` masks with the same width and epochs."""

    source: str
    train_preset: str
    hidden_sizes: tuple[int, ...]
    epochs: int
    pool_sizes: tuple[int, ...]
    alpha_pools: tuple[int, ...]
    target_relative_se: float  # of the normaliser estimates
    max_samples: int  # cap on mixture draws per normaliser estimate
    chunk: int = 10_000
    seed: int = 0

    def config(self, num_masks: int) -> TrainConfig:
        return preset(
            self.train_preset,
            hidden_sizes=list(self.hidden_sizes),
            num_masks=num_masks,
            epochs=self.epochs,
            seed=self.seed,
        )


TINY = PoolStudy("digits", "digits", (32,), 2, (1, 2, 4), (2, 4), 0.05, 20_000, chunk=5_000)
DIGITS = PoolStudy("digits", "digits", (256,), 60, (1, 2, 4, 8, 16, 32), (8, 32), 0.01, 300_000)
FASHION = PoolStudy(
    "fashion-mnist", "fashion-mnist", (500,), 20, (1, 2, 4, 8, 16, 32), (8, 32), 0.02, 100_000
)
PRESETS: dict[str, tuple[PoolStudy, ...]] = {
    "tiny": (TINY,),
    "quick": (DIGITS,),
    "full": (DIGITS, FASHION),
    "none": (),  # only --shipped
}


# -- runs ----------------------------------------------------------------------------------------
def train_or_load(config: TrainConfig, run_dir: Path) -> "TrainedModel":
    """The run in ``run_dir`` if it was trained with ``config``, else train it there now."""
    from model.train import FINAL_MODEL, Trainer, load_trained

    if (run_dir / FINAL_MODEL).is_file():
        trained = load_trained(run_dir)
        if trained.config != config:
            raise ValueError(f"{run_dir} holds a run with another configuration; use new --runs")
        return trained
    log.info("training %s", run_dir)
    return Trainer(config, run_dir, progress=False).fit()


def artifact_for(trained: "TrainedModel", directory: Path) -> ExportedMembers:
    """Export once (cached by directory) and load the artifact: its sampler is the service's."""
    from model.export import export

    if not (directory / "manifest.json").is_file():
        export(trained, directory)
    return ExportedMembers.open(directory)


# -- evaluation ----------------------------------------------------------------------------------
def split_outputs(exported: ExportedMembers, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rows [N, D] -> member log-likelihoods [N, K] and the uniform logit-average log f(x) [N]."""
    uniform = np.ones(len(exported.weights))
    log_probs, averaged = [], []
    for i in range(0, len(rows), EVAL_BATCH):
        batch = rows[i : i + EVAL_BATCH]
        lp, logits = exported.forward(batch)
        log_probs.append(lp)
        averaged.append(logit_average_log_prob(batch, logits, uniform))
    return np.concatenate(log_probs), np.concatenate(averaged)


def nll(log_probs: np.ndarray, weights: np.ndarray) -> float:
    return float(-mixture_log_prob(log_probs, weights).mean())


def mixture_rows(log_probs: dict[str, np.ndarray], em: np.ndarray) -> dict[str, dict]:
    k = log_probs["valid"].shape[1]
    out = {}
    for split, lp in log_probs.items():
        members = -lp.mean(axis=0)
        out[split] = {
            "best_member": float(members.min()),
            "mean_member": float(members.mean()),
            "uniform_mixture": nll(lp, np.full(k, 1.0 / k)),
            "em_mixture": nll(lp, em),
        }
    return out


def normalised_combinations(
    exported: ExportedMembers,
    log_probs: dict[str, np.ndarray],
    averaged: dict[str, np.ndarray],
    spec: PoolStudy,
) -> dict[str, object]:
    """PoE (the artifact's weights) and logit averaging: normaliser estimates and NLLs per split."""
    rng = np.random.default_rng(spec.seed)
    settings = dict(
        target_relative_se=spec.target_relative_se, chunk=spec.chunk, max_samples=spec.max_samples
    )
    result: dict[str, object] = {"weights": exported.weights.tolist()}
    if len(exported.weights) == 1:  # a product of one expert is that expert: Z = 1 exactly
        poe = None
    else:
        poe = estimate_log_normaliser(product_sampler(exported, rng), bounded=True, **settings)
    la = estimate_log_normaliser(logit_average_sampler(exported, rng), bounded=False, **settings)
    result["poe_normaliser"] = poe.to_dict() if poe else None
    result["logit_average_normaliser"] = la.to_dict()
    for split, lp in log_probs.items():
        geometric = float(-product_log_unnormalised(lp, exported.weights).mean())
        reported = float(-averaged[split].mean())
        result[split] = {
            "mixture": nll(lp, exported.weights),
            "poe": geometric + (poe.log_z if poe else 0.0),
            "poe_conservative": geometric + (poe.log_z_upper if poe else 0.0),
            "logit_average_reported": reported,
            "logit_average_estimate": reported + la.log_z,
            "logit_average_lower_bound": reported + la.log_z_lower,
        }
    return result


def alpha_sweep(log_probs: dict[str, np.ndarray]) -> list[dict[str, object]]:
    rows = []
    for alpha in ALPHAS:
        weights = fit_em_weights(log_probs["valid"], alpha=alpha)
        rows.append(
            {
                "alpha": alpha,
                "weights": weights.tolist(),
                "nonzero": int((weights > 0).sum()),
                "min_weight": float(weights.min()),
                "valid": nll(log_probs["valid"], weights),
                "test": nll(log_probs["test"], weights),
            }
        )
    return rows


def backward_elimination(log_probs: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """Drop, one at a time, the member whose removal raises the uniform mixture's valid NLL least:
    the sparsity a Dirichlet prior cannot give (it removes at most one count per member)."""
    kept = list(range(log_probs["valid"].shape[1]))
    path = []
    while True:
        uniform = np.full(len(kept), 1.0 / len(kept))
        path.append(
            {
                "kept": list(kept),
                "valid": nll(log_probs["valid"][:, kept], uniform),
                "test": nll(log_probs["test"][:, kept], uniform),
            }
        )
        if len(kept) == 1:
            return path
        smaller = np.full(len(kept) - 1, 1.0 / (len(kept) - 1))
        cost = [nll(log_probs["valid"][:, [j for j in kept if j != i]], smaller) for i in kept]
        kept.pop(int(np.argmin(cost)))


def first_k_curve(test_log_probs: np.ndarray) -> list[float]:
    """Test NLL of the uniform mixture of the first k members, k = 1..K."""
    k_max = test_log_probs.shape[1]
    return [nll(test_log_probs[:, :k], np.full(k, 1.0 / k)) for k in range(1, k_max + 1)]


def run_pool_study(spec: PoolStudy, runs: Path) -> dict[str, object]:
    """Train or reuse every pool of ``spec`` and measure it; returns the JSON-able results."""
    from model.data import load_dataset

    data = load_dataset(spec.source)
    splits = {"valid": data.valid, "test": data.test}
    pools, alphas, first_k, elimination = [], {}, None, None
    for k in spec.pool_sizes:
        run_dir = runs / spec.source / f"k{k}"
        started = time.perf_counter()
        trained = train_or_load(spec.config(k), run_dir)
        exported = artifact_for(trained, runs / spec.source / f"art-k{k}")
        outputs = {split: split_outputs(exported, rows) for split, rows in splits.items()}
        log_probs = {split: lp for split, (lp, _) in outputs.items()}
        averaged = {split: la for split, (_, la) in outputs.items()}
        em = fit_em_weights(log_probs["valid"], alpha=1.0)
        pools.append(
            {
                "num_masks": k,
                "run": str(run_dir),
                "train_seconds": trained.report.train_seconds,
                "epochs_run": trained.report.epochs_run,
                "em_weights": em.tolist(),
                **mixture_rows(log_probs, em),
                "combinations": normalised_combinations(exported, log_probs, averaged, spec),
                "study_seconds": round(time.perf_counter() - started, 1),
            }
        )
        log.info("%s K=%d done in %.0f s", spec.source, k, pools[-1]["study_seconds"])
        if k in spec.alpha_pools:
            alphas[str(k)] = alpha_sweep(log_probs)
        if k == max(spec.pool_sizes):
            first_k = first_k_curve(log_probs["test"])
            elimination = backward_elimination(log_probs)
    return {
        "spec": asdict(spec),
        "config": {str(k): spec.config(k).to_dict() for k in spec.pool_sizes},
        "pools": pools,
        "alpha_sweeps": alphas,
        "first_k_test": first_k,
        "backward_elimination": elimination,
    }


# -- the shipped artifact --------------------------------------------------------------------------
def study_shipped(artifact: Path, figures: Path, max_samples: int, seed: int) -> dict[str, object]:
    """PoE and logit averaging of a shipped artifact, plus grids of its samples and completions."""
    from model.data import load_dataset
    from service.contract.image_grid import grid_png

    exported = ExportedMembers.open(artifact)
    manifest = exported.manifest
    data = load_dataset(manifest.data.source)
    spec = replace(
        FASHION, pool_sizes=(), target_relative_se=0.01, max_samples=max_samples, seed=seed
    )
    outputs = {s: split_outputs(exported, data.split(s)) for s in ("valid", "test")}
    result = normalised_combinations(
        exported,
        {s: lp for s, (lp, _) in outputs.items()},
        {s: la for s, (_, la) in outputs.items()},
        spec,
    )
    result["artifact"] = str(artifact)
    result["name"] = manifest.name
    rng = np.random.default_rng(seed)
    if manifest.image_shape:
        shape = tuple(manifest.image_shape)
        (figures / "shipped-samples.png").write_bytes(grid_png(exported.sample(64, rng), shape, 8))
        result["completions"] = completions_grid(exported, data.test[:8], shape, figures, rng)
    return result


def completions_grid(
    exported: ExportedMembers,
    images: np.ndarray,
    shape: tuple[int, int],
    figures: Path,
    rng: np.random.Generator,
) -> dict[str, object]:
    """Each row: the original, its top half, then five draws of the bottom half given the top."""
    from service.contract.image_grid import grid_png

    half = shape[0] // 2 * shape[1]
    given = images.copy()
    given[:, half:] = np.nan
    completion = exported.complete(given, num_samples=5, num_particles=1024, rng=rng)
    top_only = np.where(np.isnan(given), 0.0, given)
    tiles = [
        tile
        for i in range(len(images))
        for tile in (images[i], top_only[i], *completion.samples[i])
    ]
    (figures / "shipped-completions.png").write_bytes(grid_png(np.array(tiles), shape, 7))
    return {
        "method": sorted(set(completion.method)),
        "effective_sample_size": completion.effective_sample_size,
    }


# -- pruning -------------------------------------------------------------------------------------
def rows_per_second(exported: ExportedMembers, rows: np.ndarray, seconds: float = 2.0) -> float:
    """In-process member log-likelihood throughput at batch 256, one thread."""
    batch = rows[:256]
    exported.member_log_probs(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        exported.member_log_probs(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)


def pruning(spec: PoolStudy, runs: Path, results: dict[str, object]) -> dict[str, object]:
    """Export the largest pool with its zero-weight members pruned and time it against the full one.

    The weights are the sparsest MAP-EM fit if the prior zeroes any member; otherwise the smallest
    backward-elimination subset within PRUNE_TOLERANCE nats of the full pool on valid, uniform.
    """
    from model.data import load_dataset
    from model.export import export
    from model.train import load_trained

    k = max(spec.pool_sizes)
    sparsest = min(
        results["alpha_sweeps"].get(str(k), []), key=lambda r: r["nonzero"], default=None
    )
    if sparsest is not None and sparsest["nonzero"] < k:
        weights, rule = np.asarray(sparsest["weights"]), f"MAP-EM alpha={sparsest['alpha']:g}"
    else:
        path = results["backward_elimination"]
        limit = path[0]["valid"] + PRUNE_TOLERANCE
        subset = min((row for row in path if row["valid"] <= limit), key=lambda r: len(r["kept"]))
        weights = np.zeros(k)
        weights[subset["kept"]] = 1.0 / len(subset["kept"])
        rule = f"backward elimination, valid within {PRUNE_TOLERANCE} nats"
    trained = load_trained(runs / spec.source / f"k{k}")
    report = replace(trained.report, mixture_weights=weights.tolist(), weights_kind="em")
    trained = replace(trained, report=report)
    out = runs / spec.source / f"art-k{k}-pruned"
    export(trained, out, prune=True)
    rows = load_dataset(spec.source).test
    full, pruned = ExportedMembers.open(runs / spec.source / f"art-k{k}"), ExportedMembers.open(out)
    return {
        "num_masks": k,
        "rule": rule,
        "prior_prunes": sparsest is not None and sparsest["nonzero"] < k,
        "kept": int((weights > 0).sum()),
        "full_rows_per_second": rows_per_second(full, rows),
        "pruned_rows_per_second": rows_per_second(pruned, rows),
        "test_nll_full": nll(split_outputs(full, rows)[0], full.weights),
        "test_nll_pruned": nll(split_outputs(pruned, rows)[0], pruned.weights),
    }


# -- figures and tables --------------------------------------------------------------------------
def plot_figures(results: dict[str, object], figures: Path, tag: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pools = results["pools"]
    ks = [p["num_masks"] for p in pools]
    written = []

    def save(fig, name: str) -> None:
        path = figures / f"{tag}-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("best_member", "best member"),
        ("mean_member", "mean member"),
        ("uniform_mixture", "uniform mixture"),
        ("em_mixture", "EM mixture"),
    ):
        ax.plot(ks, [p["test"][key] for p in pools], marker="o", label=label)
    ax.plot(ks, [p["combinations"]["test"]["poe"] for p in pools], marker="s", label="PoE (est.)")
    ax.set(xscale="log", xlabel="number of masks K", ylabel="test NLL (nats)", title=tag)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.legend()
    save(fig, "nll-vs-masks")

    sweeps = results["alpha_sweeps"]
    fig, axes = plt.subplots(len(sweeps), 1, figsize=(7, 2.6 * len(sweeps)), squeeze=False)
    for ax, (k, rows) in zip(axes[:, 0], sweeps.items(), strict=True):
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            positions = np.arange(int(k)) + i * width
            ax.bar(positions, row["weights"], width, label=f"alpha={row['alpha']:g}")
        ax.axhline(1 / int(k), color="gray", lw=0.5)
        ax.set_xticks(np.arange(int(k)) + 0.4 - width / 2, [str(i) for i in range(int(k))])
        ax.tick_params(axis="x", labelsize=6)
        ax.set(xlabel="member", ylabel="MAP-EM weight", title=f"{tag}: K={k}")
        ax.legend(fontsize=7, ncol=4)
    save(fig, "em-weights")

    fig, ax = plt.subplots(figsize=(6, 4))
    multi = [p for p in pools if p["num_masks"] > 1]
    xs = [p["num_masks"] for p in multi]
    test = [p["combinations"]["test"] for p in multi]
    ax.plot(xs, [p["test"]["mean_member"] for p in multi], marker="o", label="mean member")
    ax.plot(xs, [t["mixture"] for t in test], marker="o", label="mixture")
    ax.plot(xs, [t["poe"] for t in test], marker="s", label="PoE, estimate")
    ax.plot(xs, [t["poe_conservative"] for t in test], ls="--", label="PoE, 95% bound")
    ax.plot(xs, [t["logit_average_lower_bound"] for t in test], ls=":", label="logit avg, lower b.")
    ax.plot(xs, [t["logit_average_reported"] for t in test], marker="x", label="logit avg 'NLL'")
    ax.set(xscale="log", xlabel="number of masks K", ylabel="test NLL (nats)", title=tag)
    ax.set_xticks(xs, [str(k) for k in xs])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    save(fig, "poe-vs-mixture")

    curve = results["first_k_test"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(curve) + 1), curve, marker=".", label="first k members, uniform")
    path = results["backward_elimination"]
    ax.plot(
        [len(r["kept"]) for r in path],
        [r["test"] for r in path],
        marker=".",
        label="k kept by backward elimination on valid",
    )
    ax.legend(fontsize=8)
    ax.set(
        xlabel="k members in the uniform mixture",
        ylabel="test NLL (nats)",
        title=f"{tag}: K={len(curve)} pool",
    )
    save(fig, "first-k")
    return written


def tables(results: dict[str, object], tag: str) -> str:
    """Markdown tables of one pool study (numbers in nats per example)."""
    lines = [
        f"### {tag}",
        "",
        "| K | split | best member | mean member | uniform | EM | PoE (est.) "
        "| PoE (95% bound) | logit avg 'NLL' | its true NLL (est.) | (95% lower bound) | train s |",
        "|" + "---|" * 12,
    ]
    for p in results["pools"]:
        for split in ("valid", "test"):
            m, c = p[split], p["combinations"][split]
            lines.append(
                f"| {p['num_masks'] if split == 'valid' else ''} | {split} | "
                f"{m['best_member']:.2f} | {m['mean_member']:.2f} | {m['uniform_mixture']:.2f} | "
                f"{m['em_mixture']:.2f} | {c['poe']:.2f} | {c['poe_conservative']:.2f} | "
                f"{c['logit_average_reported']:.2f} | {c['logit_average_estimate']:.2f} | "
                f"{c['logit_average_lower_bound']:.2f} | "
                f"{p['train_seconds'] if split == 'valid' else ''} |"
            )
    lines += [
        "",
        "| K | PoE log Z | SE | 95% upper | samples | ESS | logit avg log Z | SE | "
        "Markov lower | samples | ESS | max share |",
        "|" + "---|" * 12,
    ]
    for p in results["pools"]:
        poe, la = p["combinations"]["poe_normaliser"], p["combinations"]["logit_average_normaliser"]
        poe_text = (
            f"{poe['log_z']:.3f} | {poe['log_z_se']:.3f} | {poe['log_z_upper']:.3f} | "
            f"{poe['num_samples']} | {poe['effective_sample_size']:.0f}"
            if poe
            else "0 (exact) | 0 | 0 | - | -"
        )
        lines.append(
            f"| {p['num_masks']} | {poe_text} | {la['log_z']:.2f} | {la['log_z_se']:.2f} | "
            f"{la['log_z_lower']:.2f} | {la['num_samples']} | {la['effective_sample_size']:.1f} | "
            f"{la['max_weight_share']:.2f} |"
        )
    for k, rows in results["alpha_sweeps"].items():
        lines += [
            "",
            f"MAP-EM weights, K={k} (fit on valid)",
            "",
            "| alpha | non-zero | min weight | max weight | valid | test |",
            "|" + "---|" * 6,
        ]
        for row in rows:
            lines.append(
                f"| {row['alpha']:g} | {row['nonzero']} | {row['min_weight']:.4f} | "
                f"{max(row['weights']):.4f} | {row['valid']:.3f} | {row['test']:.3f} |"
            )
    return "\n".join(lines) + "\n"


# -- command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="made-study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for JSON, tables, figures")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--runs", type=Path, default=Path("runs/study"), help="run/artifact cache")
    parser.add_argument("--shipped", type=Path, help="artifact for PoE, samples and completions")
    parser.add_argument("--shipped-samples", type=int, default=1_000_000, help="cap on draws")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    figures = args.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for spec in PRESETS[args.preset]:
        started = time.perf_counter()
        results = run_pool_study(spec, args.runs)
        results["pruning"] = pruning(spec, args.runs, results)
        results["seconds"] = round(time.perf_counter() - started, 1)
        plot_figures(results, figures, spec.source)
        (args.out / f"study-{spec.source}.md").write_text(tables(results, spec.source))
        (args.out / f"study-{spec.source}.json").write_text(json.dumps(results, indent=1) + "\n")
    if args.shipped:
        started = time.perf_counter()
        shipped = study_shipped(args.shipped, figures, args.shipped_samples, seed=0)
        shipped["seconds"] = round(time.perf_counter() - started, 1)
        (args.out / "study-shipped.json").write_text(json.dumps(shipped, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
