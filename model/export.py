"""Export a trained pool to an artifact directory: ``model.onnx`` + ``manifest.json``.

Refuses to write an artifact whose onnxruntime (or torch) log-likelihoods differ from a float64
evaluation of the trained weights by more than ``service.contract.parity``'s tolerance on real
rows, the members' own samples and random rows.
"""

import logging
import math
import shutil
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from pydantic import ValidationError

from model.data import CALIBRATION_SEED, Dataset, hold_out_calibration
from model.exported import ExportedMembers
from model.made import MADE
from model.normaliser import CONFIDENCE, estimate_log_normaliser, product_sampler
from model.onnx_graph import OPSET, build_graph
from model.train import SplitNll, TrainedModel, member_log_probs, source_data
from service.contract import artifact, conformal, parity
from service.contract.masks import MaskPool
from service.contract.mixture import product_log_unnormalised
from service.contract.sampler import MemberNet, Sampler, member_nets
from service.contract.schema_sampler import SchemaSampler

log = logging.getLogger(__name__)

PARITY_ROWS = 256  # of each kind: real, sampled, random
CALIBRATION_BATCH = 1024  # rows per onnxruntime call while scoring the calibration rows


class ExportError(RuntimeError):
    """The exported graph does not reproduce the trained model."""


Weights = tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]


def trained_weights(trained: TrainedModel) -> Weights:
    """Float32 weights and biases of every layer (the output layer last), and the direct weight."""
    made = trained.model
    to_np = lambda t: t.detach().cpu().numpy()  # noqa: E731
    return (
        [to_np(layer.weight) for layer in made.layers],
        [to_np(layer.bias) for layer in made.layers],
        to_np(made.direct.weight) if made.direct is not None else None,
    )


def onnx_model(trained: TrainedModel) -> onnx.ModelProto:
    return build_graph(trained.model.pool, *trained_weights(trained), trained.model.schema)


def trained_nets(trained: TrainedModel) -> list[MemberNet]:
    """The members' masked weights, as the service reads them from the graph."""
    return member_nets(trained.model.pool, *trained_weights(trained), trained.model.schema)


def trained_sampler(trained: TrainedModel) -> Sampler | SchemaSampler:
    nets = trained_nets(trained)
    schema = trained.model.schema
    return Sampler(nets) if schema is None else SchemaSampler(nets, schema)


def parity_inputs(trained: TrainedModel, valid: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Real validation rows (from ``valid``), the members' own samples and random rows
    (``service.contract.parity.random_rows``), by kind, each [N, D] float32."""
    rng = np.random.default_rng(seed)
    dim, k = trained.model.dim, trained.model.num_members
    members = np.repeat(np.arange(k), math.ceil(PARITY_ROWS / k))
    nothing_given = np.full((len(members), dim), np.nan, dtype=np.float32)
    sampled, _ = trained_sampler(trained).draw(
        members, nothing_given, rng.random(nothing_given.shape)
    )
    return {
        "real": valid[rng.permutation(len(valid))[:PARITY_ROWS]],
        "sampled": sampled,
        "random": parity.random_rows(trained.model.schema, PARITY_ROWS, dim, rng),
    }


def check_parity(trained: TrainedModel, model_bytes: bytes, rows: dict[str, np.ndarray]) -> float:
    """Compare onnxruntime's and torch's member log-likelihoods on each kind of rows with a float64
    evaluation of the trained weights; raise ExportError past the tolerance of
    ``service.contract.parity``.

    Returns the largest |onnxruntime - float64| in nats.
    """
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    nets = trained_nets(trained)
    largest = 0.0
    for kind, x in rows.items():
        (onnx_lp,) = session.run([artifact.OUTPUT_LOG_PROB], {artifact.INPUT_X: x})
        if not np.isfinite(onnx_lp).all():
            raise ExportError("onnxruntime produced non-finite log-likelihoods")
        with torch.no_grad():
            torch_lp = member_log_probs(trained.model.cpu(), x)
        reference = parity.reference_log_probs(nets, x, trained.model.schema)
        for side, values in (("onnxruntime", onnx_lp), ("torch", torch_lp)):
            gap = parity.worst_gap(values, reference)
            if not gap.within:
                raise ExportError(
                    f"{side} parity gap {gap} against a float64 evaluation of the trained "
                    f"weights on {kind} rows"
                )
        largest = max(largest, float(np.abs(onnx_lp - reference).max()))
    return largest


def build_manifest(trained: TrainedModel, onnx_path: Path) -> artifact.Manifest:
    config, report, data = trained.config, trained.report, trained.dataset_info
    pool = trained.model.pool
    natural = np.arange(pool.dim)
    members = [
        artifact.Member(
            ordering=order.tolist(),
            ordering_kind="natural" if np.array_equal(order, natural) else "random",
        )
        for order in pool.orderings
    ]
    hidden = "-".join(map(str, config.hidden_sizes)) or "none"
    schema = trained.model.schema
    return artifact.Manifest(
        schema_version=artifact.BINARY_SCHEMA_VERSION
        if schema is None
        else artifact.SCHEMA_VERSION,
        name=f"made-{data.source}-k{pool.num_members}-h{hidden}",
        package_version=version("made-serve"),
        created_at=datetime.now(UTC),
        dim=pool.dim,
        dimensions=None if schema is None else list(schema.dimensions),
        image_shape=tuple(data.image_shape) if data.image_shape else None,
        hidden_sizes=list(config.hidden_sizes),
        direct_connections=config.direct,
        ordering_mode=config.ordering,
        members=members,
        mixture_weights=report.mixture_weights,
        weights_kind=report.weights_kind,
        em_alpha=report.em_alpha,
        pruned_members=report.pruned_members,
        data=data.data_info(),
        metrics={"valid": report.valid.metrics(), "test": report.test.metrics()},
        training={
            "config": config.to_dict(),
            "epochs_run": report.epochs_run,
            "train_seconds": report.train_seconds,
            "torch": torch.__version__,
        },
        onnx=artifact.OnnxInfo(
            sha256=artifact.sha256_of(onnx_path),
            opset=OPSET,
            num_bytes=onnx_path.stat().st_size,
        ),
    )


def prune_members(trained: TrainedModel) -> TrainedModel:
    """The same network keeping only the members of non-zero mixture weight: the mixture is
    unchanged and every row costs fewer member evaluations. Masks derive from the kept pool."""
    weights = np.asarray(trained.report.mixture_weights, dtype=np.float64)
    keep = np.flatnonzero(weights > 0)
    if len(keep) == len(weights):
        return trained
    pool = trained.model.pool
    kept = MaskPool(pool.orderings[keep], tuple(h[keep] for h in pool.hidden_degrees))
    made = trained.model
    model = MADE(
        made.dim, made.hidden_sizes, kept, direct=made.direct is not None, schema=made.schema
    )
    model.load_state_dict(made.state_dict())
    report = trained.report
    mixture_weights = (weights[keep] / weights[keep].sum()).tolist()
    em = np.asarray(report.em_weights, dtype=np.float64)[keep]

    def kept_members(metrics: SplitNll) -> SplitNll:
        return replace(metrics, members=[metrics.members[k] for k in keep])

    report = replace(
        report,
        mixture_weights=mixture_weights,
        em_weights=(em / em.sum()).tolist() if em.sum() > 0 else mixture_weights,
        pruned_members=keep.tolist(),
        valid=kept_members(report.valid),
        test=kept_members(report.test),
    )
    return TrainedModel(trained.config, model.eval(), trained.dataset_info, report)


def estimate_product_normaliser(
    members: ExportedMembers, seed: int = 0
) -> artifact.ProductNormaliser:
    """log Z of the exported product of experts, from the mixture's own exact sampler."""
    if np.count_nonzero(members.weights) == 1:  # a product of one expert is that expert
        return artifact.ProductNormaliser(
            log_z=0.0, standard_error=0.0, upper_bound=0.0, confidence=CONFIDENCE, num_samples=0
        )
    rng = np.random.default_rng(seed)
    log.info(
        "estimating the product of experts' normaliser from exact mixture samples, until its "
        "relative standard error is below 1% (one line per chunk)"
    )
    estimate = estimate_log_normaliser(product_sampler(members, rng), bounded=True)
    return artifact.ProductNormaliser(
        log_z=estimate.log_z,
        standard_error=estimate.log_z_se,
        # The bound is the smallest of the bounds checked while sampling went on, which the
        # final mean can exceed; a larger upper bound is still one, at the same confidence.
        upper_bound=max(estimate.log_z_upper, estimate.log_z),
        confidence=CONFIDENCE,
        num_samples=estimate.num_samples,
        effective_sample_size=estimate.effective_sample_size,
    )


def calibrate(
    data: Dataset,
    members: ExportedMembers,
    normaliser: artifact.ProductNormaliser | None,
) -> artifact.Calibration | None:
    """The exported combinations' scores of the run's held-out calibration rows (``data``, as
    the run split it), computed by the written graph as the service computes a request's; None
    for runs that held none out."""
    if data.calibration is None:
        return None
    rows = data.calibration
    per_member = np.concatenate(
        [
            members.member_log_probs(rows[i : i + CALIBRATION_BATCH])
            for i in range(0, len(rows), CALIBRATION_BATCH)
        ]
    )
    log_likelihoods = {"mixture": members.mixture(per_member)}
    if normaliser is not None:
        log_likelihoods["product"] = (
            product_log_unnormalised(per_member, members.weights) - normaliser.log_z
        )
    scores = {
        combination: {"log_likelihood": np.sort(values).tolist()}
        for combination, values in log_likelihoods.items()
    }
    # The complexity correction compresses rows as bytes of levels: for discrete data only.
    if members.schema is None or not members.schema.has_continuous:
        complexity = conformal.compressed_nats(rows, members.max_level)
        for combination, values in log_likelihoods.items():
            scores[combination]["complexity_corrected"] = np.sort(values + complexity).tolist()
    return artifact.Calibration(
        rows=data.calibration_rows.tolist(),
        seed=CALIBRATION_SEED,
        compressor=conformal.COMPRESSOR,
        scores=scores,
    )


def export(
    trained: TrainedModel, out_dir: Path, prune: bool = False, product: bool = False
) -> tuple[artifact.Manifest, float]:
    """Write the artifact to ``out_dir`` atomically; return its manifest and the parity gap.

    prune: drop members of zero mixture weight (a sparse MAP-EM fit) from the graph.
    product: estimate the product of experts' log Z (minutes for large models) into the manifest.
    """
    if prune:
        trained = prune_members(trained)
    model = onnx_model(trained)
    model_bytes = model.SerializeToString()
    source = source_data(trained.config)  # read once: parity rows and calibration rows
    gap = check_parity(trained, model_bytes, parity_inputs(trained, source.valid))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        onnx_path = staging / artifact.ONNX_FILE
        onnx_path.write_bytes(model_bytes)
        manifest = build_manifest(trained, onnx_path)
        members = ExportedMembers(manifest, model_bytes, trained_nets(trained))
        if product:
            normaliser = estimate_product_normaliser(members)
            manifest = manifest.model_copy(update={"product_normaliser": normaliser})
        split = hold_out_calibration(source, trained.config.calibration_fraction)
        calibration = calibrate(split, members, manifest.product_normaliser)
        # model_copy does not validate: the checks across fields run once more on the whole.
        manifest = artifact.Manifest.model_validate(
            {**manifest.model_dump(), "calibration": calibration}
        )
        artifact.write_manifest(manifest, staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
        staging.rename(out_dir)
    except ValidationError as exc:  # e.g. NaN weights or metrics from a diverged run
        raise ExportError(f"the manifest would be invalid: {artifact.describe(exc)}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest, gap
