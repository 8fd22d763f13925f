"""The ensemble's math on onnxruntime outputs: likelihoods, marginals, samples, completions.

Pure arrays in and out; no HTTP. Log-probabilities are in nats. Rows are [B, D] float32 in {0, 1},
with NaN marking a missing entry where a method allows it.
"""

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service import artifact
from service.artifact import ArtifactError, Manifest
from service.masks import MaskPool, input_degrees
from service.mixture import log_weights, mixture_log_prob
from service.poe import product_log_unnormalised
from service.sampler import MemberNet, Sampler, member_nets

Method = Literal["exact", "importance"]


class Cancelled(Exception):
    """The request that wanted this work is gone (timed out); stop spending CPU on it."""


def _stop_if(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled


PARITY_TOLERANCE = 1e-3  # nats, as at export


@dataclass(frozen=True)
class Likelihood:
    log_likelihood: np.ndarray  # [B] mixture log p(x)
    per_member: np.ndarray  # [B, K] log p_k(x)
    per_dimension: np.ndarray  # [B, K, D] log p_k(x_d | x_<d)


@dataclass(frozen=True)
class Marginal:
    log_likelihood: np.ndarray  # [B] log p(x_observed), exact or estimated
    standard_error: np.ndarray  # [B] of the log estimate (delta method), 0 where exact
    effective_sample_size: list[float | None]  # [B], None where exact
    method: list[Method]  # [B]


@dataclass(frozen=True)
class Completion:
    samples: np.ndarray  # [B, n, D] float32 in {0, 1}
    effective_sample_size: list[float | None]
    method: list[Method]


def log_terms(rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """[B, K, D] log p_k(x_d | x_<d) from rows [B, D] and logits [B, K, D]."""
    z = logits.astype(np.float64)
    return rows[:, None, :] * z - np.logaddexp(0.0, z)


class Engine:
    """A loaded artifact: the onnxruntime session for batches, member weights for sampling."""

    def __init__(self, manifest: Manifest, session: ort.InferenceSession, nets: list[MemberNet]):
        self.manifest = manifest
        self.session = session
        self.num_members = len(nets)
        self.positions = np.stack([input_degrees(net.ordering) - 1 for net in nets])  # [K, D]
        self.sampler = Sampler(nets)
        self.dim = manifest.dim
        self.weights = np.asarray(manifest.mixture_weights, dtype=np.float64)
        self.active = np.flatnonzero(self.weights > 0)

    @classmethod
    def load(cls, directory: Path, threads: int = 1) -> "Engine":
        """Load and validate an artifact; raise ArtifactError naming what is wrong."""
        manifest = artifact.read_manifest(directory)
        onnx_path = artifact.verify_onnx_file(directory, manifest)
        try:
            model = onnx.load(str(onnx_path))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # Idle intra-op threads would spin on the cores the event loop needs between batches.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnx and onnxruntime raise many unrelated types on bad files
            raise ArtifactError(f"{onnx_path} cannot be loaded: {exc}") from exc
        nets = member_nets_from_graph(model, manifest)
        engine = cls(manifest, session, nets)
        engine.smoke_check()
        return engine

    def smoke_check(self) -> None:
        """Fail at load, not at the first request, on a graph that gives non-finite output or
        disagrees with the sampler's numpy reading of the same weights (a tampered graph)."""
        rows = (np.random.default_rng(0).random((4, self.dim)) < 0.5).astype(np.float32)
        per_member, _ = self.forward(rows)
        if not np.isfinite(per_member).all():
            raise ArtifactError("model.onnx produces non-finite log-likelihoods (NaN weights?)")
        members = np.repeat(np.arange(self.num_members), len(rows))
        tiled = np.tile(rows, (self.num_members, 1))
        _, log_weight = self.sampler.draw(members, tiled, np.zeros(tiled.shape))
        numpy_side = log_weight.reshape(self.num_members, len(rows)).T
        gap = float(np.abs(numpy_side - per_member).max())
        if gap > PARITY_TOLERANCE:
            raise ArtifactError(
                f"model.onnx log-likelihoods differ from its own weights' by {gap:.3g} nats "
                f"(more than {PARITY_TOLERANCE}): the graph does not compute the manifest's model"
            )

    # -- batched model calls ---------------------------------------------------------------
    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [B, D] -> member log-likelihoods [B, K] float64 and logits [B, K, D] float32."""
        log_prob, logits = self.session.run(
            [artifact.OUTPUT_LOG_PROB, artifact.OUTPUT_LOGITS], {artifact.INPUT_X: rows}
        )
        return log_prob.astype(np.float64), logits

    def member_log_probs(self, rows: np.ndarray) -> np.ndarray:
        (log_prob,) = self.session.run([artifact.OUTPUT_LOG_PROB], {artifact.INPUT_X: rows})
        return log_prob.astype(np.float64)

    def log_likelihood(self, rows: np.ndarray, per_dimension: bool = False) -> Likelihood:
        """Complete rows [B, D] -> mixture and member log-likelihoods (and per-dimension terms)."""
        if per_dimension:
            per_member, logits = self.forward(rows)
            terms = log_terms(rows, logits)
        else:
            per_member, terms = self.member_log_probs(rows), np.empty((len(rows), 0, 0))
        return Likelihood(self.mixture(per_member), per_member, terms)

    def mixture(self, per_member: np.ndarray) -> np.ndarray:
        """[B, K] member log-likelihoods -> [B] mixture log-likelihood."""
        return mixture_log_prob(per_member, self.weights)

    def product(self, per_member: np.ndarray) -> np.ndarray:
        """[B, K] member log-likelihoods -> [B] log p(x) of the product of experts, normalised by
        the manifest's estimated log Z (see ``service.poe``)."""
        normaliser = self.manifest.product_normaliser
        if normaliser is None:
            raise ValueError("this artifact has no product-of-experts normaliser")
        return product_log_unnormalised(per_member, self.weights) - normaliser.log_z

    def particles_per_member(self, num_particles: int) -> int:
        """Particles are split evenly over weighted members, at least 2 each for a variance."""
        return max(2, math.ceil(num_particles / len(self.active)))

    # -- missing entries ---------------------------------------------------------------------
    def prefix_members(self, observed: np.ndarray) -> np.ndarray:
        """[K] bool: members whose ordering starts with exactly the observed dimensions."""
        count = int(observed.sum())
        if count == 0:
            return np.ones(self.num_members, dtype=bool)
        return self.positions[:, observed].max(axis=1) < count

    def _exact_member_log_probs(self, row: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """[K] log p_k(x_observed) assuming the observed set is a prefix of every member used."""
        filled = np.where(observed, row, 0.0).astype(np.float32)[None, :]
        _, logits = self.forward(filled)
        return log_terms(filled, logits)[0][:, observed].sum(axis=1)

    def _particles(
        self, row: np.ndarray, num_particles: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Proposal draws for one row from every active member, with their log weights.

        Returns particles [P, D] and log v [P] where v = w_k * omega / M_k, omega the product of
        the member's conditionals of the observed entries; sum(v) is unbiased for p(x_obs).
        """
        per_member = self.particles_per_member(num_particles)
        members = np.repeat(self.active, per_member)
        given = np.broadcast_to(row, (len(members), self.dim))
        uniforms = rng.random((len(members), self.dim))  # the same stream as member by member
        x, log_omega = self.sampler.draw(members, given, uniforms)
        return x, log_omega + np.log(self.weights[members]) - math.log(per_member)

    def marginal(
        self,
        rows: np.ndarray,
        num_particles: int,
        rng: np.random.Generator,
        cancel: threading.Event | None = None,
    ) -> Marginal:
        """log p(x_observed) for rows with NaN entries: exact for prefix sets, else importance.

        ``cancel``, once set, stops the work between rows (raising Cancelled).
        """
        estimates, errors, sizes, methods = [], [], [], []
        for row in rows:
            _stop_if(cancel)
            observed = ~np.isnan(row)
            if self.prefix_members(observed)[self.active].all():
                member = self._exact_member_log_probs(row, observed)
                estimates.append(mixture_log_prob(member[None, :], self.weights)[0])
                errors.append(0.0)
                sizes.append(None)
                methods.append("exact")
                continue
            _, log_v = self._particles(row, num_particles, rng)
            log_total = np.logaddexp.reduce(log_v)
            share = np.exp(log_v - log_total)
            estimates.append(float(log_total))
            # Delta method: se(log p) = se(p) / p; se(p)^2 sums the per-member variances.
            variance = self._relative_variance(log_v, log_total, num_particles)
            errors.append(math.sqrt(variance))
            sizes.append(float(1.0 / np.square(share).sum()))
            methods.append("importance")
        return Marginal(np.array(estimates), np.array(errors), sizes, methods)

    def _relative_variance(self, log_v: np.ndarray, log_total: float, num_particles: int) -> float:
        per_member = self.particles_per_member(num_particles)
        v = np.exp(log_v - log_total).reshape(len(self.active), per_member)  # v / p_hat
        # Each member's sum of M terms has variance M * var(term).
        return float((per_member * v.var(axis=1, ddof=1)).sum())

    def complete(
        self,
        rows: np.ndarray,
        num_samples: int,
        num_particles: int,
        rng: np.random.Generator,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Draw completions of the NaN entries from p(x_missing | x_observed) under the mixture.

        ``cancel``, once set, stops the work between rows (raising Cancelled).
        """
        out = np.empty((len(rows), num_samples, self.dim), dtype=np.float32)
        sizes: list[float | None] = []
        methods: list[Method] = []
        for i, row in enumerate(rows):
            _stop_if(cancel)
            observed = ~np.isnan(row)
            if self.prefix_members(observed)[self.active].all():
                member = self._exact_member_log_probs(row, observed)
                posterior = np.exp(mixture_posterior_log(member, self.weights))
                chosen = rng.choice(self.num_members, size=num_samples, p=posterior)
                given = np.broadcast_to(row, (num_samples, self.dim))
                uniforms = rng.random((num_samples, self.dim))
                out[i], _ = self.sampler.draw(chosen, given, uniforms)
                sizes.append(None)
                methods.append("exact")
                continue
            particles, log_v = self._particles(row, num_particles, rng)
            share = np.exp(log_v - np.logaddexp.reduce(log_v))
            share /= share.sum()
            out[i] = particles[rng.choice(len(particles), size=num_samples, p=share)]
            sizes.append(float(1.0 / np.square(share).sum()))
            methods.append("importance")
        return Completion(out, sizes, methods)

    def sample(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """[n, D] exact samples: a member by its weight, then ancestral sampling in its ordering."""
        members = rng.choice(self.num_members, size=num_samples, p=self.weights)
        uniforms = rng.random((num_samples, self.dim))
        given = np.full((num_samples, self.dim), np.nan, dtype=np.float32)
        return self.sampler.draw(members, given, uniforms)[0]


def mixture_posterior_log(member_log_probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[K] log p(k | x) from one row's member log-likelihoods."""
    joint = member_log_probs + log_weights(weights)
    return joint - np.logaddexp.reduce(joint)


def member_nets_from_graph(model: onnx.ModelProto, manifest: Manifest) -> list[MemberNet]:
    """Member weights for the sampler, read from the graph and checked against the manifest."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    try:
        degrees = inits[artifact.INIT_INPUT_DEGREES]
        layers = len(manifest.hidden_sizes)
        hidden = tuple(inits[artifact.INIT_HIDDEN_DEGREES.format(layer=i)] for i in range(layers))
        weights = [inits[artifact.INIT_WEIGHT.format(layer=i)] for i in range(layers + 1)]
        biases = [inits[artifact.INIT_BIAS.format(layer=i)] for i in range(layers + 1)]
    except KeyError as exc:
        raise ArtifactError(f"model.onnx lacks the initializer {exc} the manifest implies") from exc
    graph_dim = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    if graph_dim != manifest.dim or degrees.shape != (manifest.num_members, manifest.dim):
        raise ArtifactError(
            f"model.onnx has D={graph_dim} and {degrees.shape[0]} members; the manifest says "
            f"D={manifest.dim} and {manifest.num_members}"
        )
    orderings = np.array([m.ordering for m in manifest.members], dtype=np.int64)
    if not all(
        np.array_equal(input_degrees(o), d) for o, d in zip(orderings, degrees, strict=True)
    ):
        raise ArtifactError("model.onnx degrees do not match the manifest's orderings")
    for name, value in inits.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ArtifactError(f"model.onnx initializer {name!r} contains NaN or infinity")
    pool = MaskPool(orderings=orderings, hidden_degrees=hidden)
    direct = inits.get(artifact.INIT_DIRECT) if manifest.direct_connections else None
    return member_nets(pool, weights, biases, direct)
