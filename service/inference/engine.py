"""A loaded artifact on onnxruntime: validated and smoke-checked at load, member likelihoods in
batches, and the ensemble's math on them (``service.contract.ensemble``: marginals, samples,
completions).

Pure arrays in and out; no HTTP. Log-probabilities are in nats. Rows are [B, D] float32 in {0, 1},
with NaN marking a missing entry where a method allows it.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from service.contract import artifact, conformal, parity
from service.contract.artifact import ArtifactError, Manifest
from service.contract.graph_nets import member_nets_from_graph
from service.contract.mixture import product_log_unnormalised
from service.contract.onnx_members import OnnxMembers, cpu_session
from service.contract.parity import random_rows
from service.contract.sampler import MemberNet
from service.inference.errors import NoProductNormaliser

log = logging.getLogger("made_serve")
SMOKE_ROWS = 8  # per member sampled, and random, for the load-time parity check


@dataclass(frozen=True)
class Likelihood:
    log_likelihood: np.ndarray  # [B] mixture log p(x)
    per_member: np.ndarray  # [B, K] log p_k(x)
    per_dimension: np.ndarray  # [B, K, D] log p_k(x_d | x_<d)


class Engine(OnnxMembers):
    """A loaded artifact: the onnxruntime session for batches, member weights for sampling."""

    def __init__(self, manifest: Manifest, session: ort.InferenceSession, nets: list[MemberNet]):
        super().__init__(manifest, session, nets)
        calibration = manifest.calibration.scores if manifest.calibration else {}
        # (combination, score) -> the held-out rows' values, ascending, for p-values.
        self.calibration = {
            (combination, score): np.asarray(values)
            for combination, by_score in calibration.items()
            for score, values in by_score.items()
        }

    @classmethod
    def load(cls, directory: Path, threads: int = 1) -> "Engine":
        """Load and validate an artifact; raise ArtifactError naming what is wrong."""
        manifest = artifact.read_manifest(directory)
        onnx_path = artifact.verify_onnx_file(directory, manifest)
        try:
            model = onnx.load(str(onnx_path))
            session = cpu_session(model.SerializeToString(), threads)
        except Exception as exc:  # onnx and onnxruntime raise many unrelated types on bad files
            raise ArtifactError(f"{onnx_path} cannot be loaded: {exc}") from exc
        nets = member_nets_from_graph(model, manifest)
        engine = cls(manifest, session, nets)
        engine.smoke_check(nets)
        calibration = manifest.calibration
        if calibration is not None and calibration.compressor != conformal.COMPRESSOR:
            log.warning(
                "%s: its complexity-corrected calibration was measured with %s, this process "
                "compresses with %s; score=complexity_corrected p-values may be slightly off",
                directory,
                calibration.compressor,
                conformal.COMPRESSOR,
            )
        return engine

    def smoke_check(self, nets: list[MemberNet]) -> None:
        """Fail at load, not at the first request, on a graph that gives non-finite output or
        does not compute its own weights (a tampered graph), or a sampler that does not.

        onnxruntime and the sampler are each compared with a float64 evaluation of ``nets``
        (``service.contract.parity``) on the members' own samples and on random rows of every
        density.
        """
        rng = np.random.default_rng(0)
        members = np.repeat(np.arange(self.num_members), SMOKE_ROWS)
        nothing_given = np.full((len(members), self.dim), np.nan, dtype=np.float32)
        sampled, _ = self.sampler.draw(members, nothing_given, rng.random(nothing_given.shape))
        rows = np.concatenate([sampled, random_rows(self.schema, SMOKE_ROWS, self.dim, rng)])
        kinds = {"sampled": slice(0, len(sampled)), "random": slice(len(sampled), None)}
        onnx_side, _ = self.forward(rows)
        if not np.isfinite(onnx_side).all():
            raise ArtifactError("model.onnx produces non-finite log-likelihoods (NaN weights?)")
        every = np.repeat(np.arange(self.num_members), len(rows))
        tiled = np.tile(rows, (self.num_members, 1))
        _, log_weight = self.sampler.draw(every, tiled, np.zeros(tiled.shape))
        sampler_side = log_weight.reshape(self.num_members, len(rows)).T
        reference = parity.reference_log_probs(nets, rows, self.schema)
        for side, values, meaning in (
            ("model.onnx", onnx_side, "the graph does not compute the manifest's model"),
            ("the sampler's", sampler_side, "samples and completions would not be the model's"),
        ):
            for kind, part in kinds.items():
                gap = parity.worst_gap(values[part], reference[part])
                if not gap.within:
                    raise ArtifactError(
                        f"{side} log-likelihoods differ from its own weights' by {gap} on "
                        f"{kind} rows: {meaning}"
                    )

    # -- batched model calls ---------------------------------------------------------------
    def log_likelihood(self, rows: np.ndarray, per_dimension: bool = False) -> Likelihood:
        """Complete rows [B, D] -> mixture and member log-likelihoods (and per-dimension terms)."""
        if per_dimension:
            per_member, logits = self.forward(rows)
            terms = self.log_terms(rows, logits)
        else:
            per_member, terms = self.member_log_probs(rows), np.empty((len(rows), 0, 0))
        return Likelihood(self.mixture(per_member), per_member, terms)

    def product(self, per_member: np.ndarray) -> np.ndarray:
        """[B, K] member log-likelihoods -> [B] log p(x) of the product of experts, normalised by
        the manifest's estimated log Z (see ``model.normaliser``)."""
        normaliser = self.manifest.product_normaliser
        if normaliser is None:
            raise NoProductNormaliser()
        return product_log_unnormalised(per_member, self.weights) - normaliser.log_z
