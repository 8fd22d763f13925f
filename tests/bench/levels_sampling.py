"""Sampling grey-level models: the schema sampler against the naive method (a full forward pass
of the member per dimension) fed the same members and uniforms, on digits at 17 levels and on
Fashion-MNIST at 8 bits (256 levels).

The digits-levels model is the preset, briefly trained and exported into bench-results/cache;
the Fashion-MNIST 8-bit figure uses the preset's network at its initial weights (speed does not
depend on quality, and training it takes tens of minutes).

    python -m tests.bench.levels_sampling
"""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from model.config import preset
from model.data import DIGITS_LEVELS, IDX_LEVELS, ORDINAL_COMPONENTS
from model.export import trained_nets
from model.train import TrainedModel, build_model
from service.contract.sampler import MemberNet
from service.contract.schema import Ordinal, Schema
from service.contract.schema_sampler import SchemaSampler
from service.inference.engine import Engine
from tests.bench.common import CACHE, rate, spread

DIGITS_SAMPLES = 2048
FASHION_SAMPLES = 64
# The naive method's rows (a full forward pass per dimension is slow: 784 per Fashion-MNIST row).
DIGITS_NAIVE = 256
FASHION_NAIVE = 4
DIGITS_EPOCHS = 5


def digits_levels_artifact() -> Path:
    """The digits-levels preset trained for a few epochs and exported, cached."""
    run, artifact = CACHE / "run-digits-levels", CACHE / "artifact-digits-levels"
    bin_dir = Path(sys.executable).parent
    if not (run / "model.pt").exists():
        print(f"training digits-levels for {DIGITS_EPOCHS} epochs into {run} ...", flush=True)
        train = [str(bin_dir / "made-train"), "--preset", "digits-levels"]
        train += ["--epochs", str(DIGITS_EPOCHS), "--out", str(run), "--quiet"]
        subprocess.run(train, check=True)
    if not (artifact / "manifest.json").exists():
        export = [str(bin_dir / "made-export"), str(run / "model.pt"), "--out", str(artifact)]
        subprocess.run(export, check=True)
    return artifact


def naive_sample(net: MemberNet, schema: Schema, uniforms: np.ndarray) -> np.ndarray:
    """The baseline: one full forward pass of the member per dimension, then the same inversion
    of that dimension's CDF as the sampler's."""
    n, dim = uniforms.shape
    x = np.zeros((n, dim), dtype=np.float32)
    for t, d in enumerate(net.ordering):
        encoded = schema.encode(x).astype(np.float32)
        h = encoded
        for weight, bias in net.hidden:
            h = np.maximum(h @ weight.T + bias, 0.0)
        outputs = h @ net.out_weight.T + net.out_bias
        if net.direct is not None:
            outputs += encoded @ net.direct.T
        units = outputs[:, schema.output_offsets[d] : schema.output_offsets[d + 1]]
        x[:, d] = schema.draw(int(d), units, uniforms[:, t])
    return x


def compare(
    nets: list[MemberNet], schema: Schema, weights: np.ndarray, samples: int, naive_rows: int
) -> dict[str, object]:
    """Samples/s of the schema sampler (``samples`` a call) and of the naive method (on
    ``naive_rows``), and how many of those rows the two draw differently."""
    sampler = SchemaSampler(nets, schema)
    fast = rate(
        lambda: sampler.sample_mixture(weights, samples, np.random.default_rng(1)),
        samples,
        min_time=0.5,
    )
    rng = np.random.default_rng(2)
    members = rng.choice(len(nets), size=naive_rows, p=weights)
    uniforms = rng.random((naive_rows, schema.dim))
    naive = np.empty((naive_rows, schema.dim), dtype=np.float32)
    start = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):  # as the sampler runs
        for k in np.unique(members):
            rows = members == k
            naive[rows] = naive_sample(nets[k], schema, uniforms[rows])
    naive_rate = naive_rows / (time.perf_counter() - start)
    given = np.full((naive_rows, schema.dim), np.nan, dtype=np.float32)
    drawn, _ = sampler.draw(members, given, uniforms)
    return {
        "fast": spread(fast),
        "naive": naive_rate,
        "naive_rows": naive_rows,
        "rows_differing_from_naive": int((drawn != naive).any(axis=1).sum()),
    }


def fashion_8bit_nets() -> tuple[list[MemberNet], Schema]:
    """The fashion-mnist-8bit preset's network (784 ordinals of 256 levels) at its initial
    weights."""
    config = preset("fashion-mnist-8bit")
    schema = Schema([Ordinal(levels=IDX_LEVELS, components=ORDINAL_COMPONENTS)] * 784)
    torch.manual_seed(0)
    model = build_model(config, schema.dim, schema=schema)
    return trained_nets(TrainedModel(config, model, None, None)), schema  # type: ignore[arg-type]


def run() -> dict[str, object]:
    artifact = digits_levels_artifact()
    engine = Engine.load(artifact)
    digits = compare(
        engine.sampler.nets, engine.schema, engine.weights, DIGITS_SAMPLES, DIGITS_NAIVE
    )
    nets, schema = fashion_8bit_nets()
    uniform = np.full(len(nets), 1 / len(nets))
    fashion = compare(nets, schema, uniform, FASHION_SAMPLES, FASHION_NAIVE)
    assert engine.schema.levels.max() == DIGITS_LEVELS
    return {
        "digits-levels": {"model": engine.manifest.name, **digits},
        "fashion-mnist-8bit": {"model": "preset network, initial weights", **fashion},
    }


def main() -> None:
    for name, figures in run().items():
        fast, naive = figures["fast"], figures["naive"]
        print(
            f"{name}: {fast['median']:,.0f} samples/s ({fast['min']:,.0f}-{fast['max']:,.0f}), "
            f"naive {naive:,.1f}/s, {fast['median'] / naive:.0f}x; "
            f"{figures['rows_differing_from_naive']} of {figures['naive_rows']} rows differ"
        )


if __name__ == "__main__":
    main()
