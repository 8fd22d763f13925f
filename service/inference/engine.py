"""The ensemble's math on onnxruntime outputs: likelihoods, marginals, samples, completions.

Pure arrays in and out; no HTTP. Log-probabilities are in nats. Rows are [B, D] float32 in {0, 1},
with NaN marking a missing entry where a method allows it.
"""

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service.contract import artifact, parity
from service.contract.artifact import ArtifactError, Manifest
from service.contract.bernoulli import bernoulli_log_prob
from service.contract.masks import MaskPool, input_degrees
from service.contract.mixture import (
    Method,
    mixture_log_prob,
    product_log_unnormalised,
    responsibilities,
)
from service.contract.sampler import MemberNet, Sampler, member_nets


class Cancelled(Exception):
    """The request that wanted this work is gone (timed out); stop spending CPU on it."""


def _stop_if(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled


SMOKE_ROWS = 8  # per member sampled, and random, for the load-time parity check
GRAPH_OUTPUTS = (artifact.OUTPUT_LOG_PROB, artifact.OUTPUT_LOGITS)
SET_GROWTH_MARGIN = 1.1  # a growing particle set aims this far past its target ESS


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
    effective_sample_size: list[float | None]  # [B] of the resampled particle set, None if exact
    method: list[Method]  # [B]
    particles_capped: list[bool]  # [B] the set hit max_particles with its ESS still below n


def log_terms(rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """[B, K, D] log p_k(x_d | x_<d) from rows [B, D] and logits [B, K, D]."""
    return bernoulli_log_prob(rows[:, None, :], logits)


class Engine:
    """A loaded artifact: the onnxruntime session for batches, member weights for sampling."""

    def __init__(self, manifest: Manifest, session: ort.InferenceSession, nets: list[MemberNet]):
        self.manifest = manifest
        self.session = session
        self.num_members = len(nets)
        self.positions = np.stack([input_degrees(net.ordering) - 1 for net in nets])  # [K, D]
        self.sampler = Sampler(nets)
        self.dim = manifest.dim
        weights = np.asarray(manifest.mixture_weights, dtype=np.float64)
        # The manifest's sum is within 1e-6 of 1; numpy's choice wants 1e-8.
        self.weights = weights / weights.sum()
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
        engine.smoke_check(nets)
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
        density = rng.random((SMOKE_ROWS, 1))
        random_rows = (rng.random((SMOKE_ROWS, self.dim)) < density).astype(np.float32)
        rows = np.concatenate([sampled, random_rows])
        kinds = {"sampled": slice(0, len(sampled)), "random": slice(len(sampled), None)}
        onnx_side, _ = self.forward(rows)
        if not np.isfinite(onnx_side).all():
            raise ArtifactError("model.onnx produces non-finite log-likelihoods (NaN weights?)")
        every = np.repeat(np.arange(self.num_members), len(rows))
        tiled = np.tile(rows, (self.num_members, 1))
        _, log_weight = self.sampler.draw(every, tiled, np.zeros(tiled.shape))
        sampler_side = log_weight.reshape(self.num_members, len(rows)).T
        reference = parity.reference_log_probs(nets, rows)
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
        the manifest's estimated log Z (see ``model.normaliser``)."""
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

    def _resampling_set(
        self,
        row: np.ndarray,
        num_samples: int,
        num_particles: int,
        max_particles: int,
        rng: np.random.Generator,
        cancel: threading.Event | None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Particles [P, D], their normalised weights [P] and effective sample size, the set
        grown from ``num_particles`` until its ESS reaches ``num_samples`` or P ``max_particles``.

        Resampled systematically, n completions carry the set's error only (about 1/ESS per
        frequency), so ESS >= n makes them as accurate as n independent exact draws. Sets are
        pooled by their log(w_k * omega) = log v + log M: every member has M draws in each, so
        the pool's common 1 / M factor is dropped by normalising.
        """
        per_member = self.particles_per_member(num_particles)
        cap = max(per_member, self.particles_per_member(max_particles))
        particles, log_v = self._particles(row, num_particles, rng)
        log_joint = log_v + math.log(per_member)
        while True:
            share = np.exp(log_joint - np.logaddexp.reduce(log_joint))
            share /= share.sum()
            # In [1, P] but for rounding, which must not grow a one-completion set.
            ess = float(np.clip(1.0 / np.square(share).sum(), 1.0, len(share)))
            if ess >= num_samples or per_member >= cap:
                return particles, share, ess
            _stop_if(cancel)
            # ESS grows about in proportion to P: aim a little past the target in one step.
            wanted = math.ceil(per_member * num_samples / ess * SET_GROWTH_MARGIN)
            extra = self.particles_per_member((min(cap, wanted) - per_member) * len(self.active))
            more, more_log_v = self._particles(row, extra * len(self.active), rng)
            particles = np.concatenate([particles, more])
            log_joint = np.concatenate([log_joint, more_log_v + math.log(extra)])
            per_member += extra

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
        max_particles: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Draw completions of the NaN entries from p(x_missing | x_observed) under the mixture.

        Importance rows start from ``num_particles`` and grow the set until its effective sample
        size reaches ``num_samples``, up to ``max_particles`` (None: no growth). ``cancel``, once
        set, stops the work between rows and growth steps (raising Cancelled).
        """
        out = np.empty((len(rows), num_samples, self.dim), dtype=np.float32)
        sizes: list[float | None] = []
        methods: list[Method] = []
        capped: list[bool] = []
        for i, row in enumerate(rows):
            _stop_if(cancel)
            observed = ~np.isnan(row)
            if self.prefix_members(observed)[self.active].all():
                member = self._exact_member_log_probs(row, observed)
                posterior = responsibilities(member[None, :], self.weights)[0]
                chosen = rng.choice(self.num_members, size=num_samples, p=posterior)
                given = np.broadcast_to(row, (num_samples, self.dim))
                uniforms = rng.random((num_samples, self.dim))
                out[i], _ = self.sampler.draw(chosen, given, uniforms)
                sizes.append(None)
                methods.append("exact")
                capped.append(False)
                continue
            particles, share, ess = self._resampling_set(
                row, num_samples, num_particles, max_particles or num_particles, rng, cancel
            )
            out[i] = particles[systematic_resample(share, num_samples, rng)]
            sizes.append(ess)
            methods.append("importance")
            capped.append(ess < num_samples)
        return Completion(out, sizes, methods, capped)

    def sample(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """[n, D] exact samples: a member by its weight, then ancestral sampling in its ordering."""
        return self.sampler.sample_mixture(self.weights, num_samples, rng)


def systematic_resample(share: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices into share [P] (summing to 1), in random order: particle i appears
    floor(n * share_i) or one more times, so the draws add at most 1/n per particle to the
    set's own error (multinomial draws would add about as much noise again as n exact draws).

    One uniform places n evenly spaced points on the weights' CDF (for n = 1, the same draw as
    ``rng.choice(P, p=share)``); the shuffle keeps any prefix of the draws representative.
    """
    cdf = np.cumsum(share)
    cdf /= cdf[-1]
    points = (rng.random() + np.arange(n)) / n
    return rng.permutation(cdf.searchsorted(points, side="right"))


def member_nets_from_graph(model: onnx.ModelProto, manifest: Manifest) -> list[MemberNet]:
    """Member weights for the sampler, read from the graph, which must hold the manifest's model:
    its inputs and outputs, D, K, hidden sizes, direct connections, opset and degrees."""
    inputs = [i.name for i in model.graph.input]
    outputs = sorted(o.name for o in model.graph.output)
    if inputs != [artifact.INPUT_X] or outputs != sorted(GRAPH_OUTPUTS):
        raise ArtifactError(
            f"model.onnx reads {inputs} and writes {outputs}; an artifact's graph reads "
            f"{[artifact.INPUT_X]} and writes {sorted(GRAPH_OUTPUTS)}"
        )
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    degrees = inits.get(artifact.INIT_INPUT_DEGREES, np.zeros((0, 0), np.int64))
    x_shape = model.graph.input[0].type.tensor_type.shape.dim
    graph_dim = x_shape[1].dim_value if len(x_shape) == 2 else 0
    if graph_dim != manifest.dim or degrees.shape != (manifest.num_members, manifest.dim):
        raise ArtifactError(
            f"model.onnx has D={graph_dim} and {degrees.shape[0]} members; the manifest says "
            f"D={manifest.dim} and {manifest.num_members}"
        )
    hidden: list[np.ndarray] = []
    while (name := artifact.INIT_HIDDEN_DEGREES.format(layer=len(hidden))) in inits:
        hidden.append(inits[name])
    graph_sizes = [int(h.shape[-1]) for h in hidden]
    if graph_sizes != manifest.hidden_sizes:
        raise ArtifactError(
            f"model.onnx has hidden sizes {graph_sizes}; the manifest says hidden_sizes "
            f"{manifest.hidden_sizes}"
        )
    if (artifact.INIT_DIRECT in inits) != manifest.direct_connections:
        raise ArtifactError(
            f"model.onnx {'has' if artifact.INIT_DIRECT in inits else 'lacks'} direct "
            f"connections; the manifest says direct_connections={manifest.direct_connections}"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != manifest.onnx.opset:
        raise ArtifactError(
            f"model.onnx has opset {opset}; the manifest says onnx.opset {manifest.onnx.opset}"
        )
    for name, shape in initializer_shapes(manifest).items():
        if name not in inits:
            raise ArtifactError(f"model.onnx lacks the initializer {name!r} the manifest implies")
        if inits[name].shape != shape:
            raise ArtifactError(
                f"model.onnx initializer {name!r} has shape {list(inits[name].shape)}; the "
                f"manifest implies {list(shape)}"
            )
    orderings = np.array([m.ordering for m in manifest.members], dtype=np.int64)
    if not all(
        np.array_equal(input_degrees(o), d) for o, d in zip(orderings, degrees, strict=True)
    ):
        raise ArtifactError("model.onnx degrees do not match the manifest's orderings")
    for name, value in inits.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ArtifactError(f"model.onnx initializer {name!r} contains NaN or infinity")
    layers = len(hidden) + 1
    pool = MaskPool(orderings=orderings, hidden_degrees=tuple(hidden))
    return member_nets(
        pool,
        [inits[artifact.INIT_WEIGHT.format(layer=i)] for i in range(layers)],
        [inits[artifact.INIT_BIAS.format(layer=i)] for i in range(layers)],
        inits.get(artifact.INIT_DIRECT),
    )


def initializer_shapes(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """The shape of every weight, bias and degree initializer the manifest's network needs."""
    k, dim = manifest.num_members, manifest.dim
    sizes = [dim, *manifest.hidden_sizes, dim]
    shapes: dict[str, tuple[int, ...]] = {artifact.INIT_INPUT_DEGREES: (k, dim)}
    for layer, width in enumerate(manifest.hidden_sizes):
        shapes[artifact.INIT_HIDDEN_DEGREES.format(layer=layer)] = (k, width)
    for layer in range(len(sizes) - 1):
        shapes[artifact.INIT_WEIGHT.format(layer=layer)] = (sizes[layer + 1], sizes[layer])
        shapes[artifact.INIT_BIAS.format(layer=layer)] = (sizes[layer + 1],)
    if manifest.direct_connections:
        shapes[artifact.INIT_DIRECT] = (dim, dim)
    return shapes
