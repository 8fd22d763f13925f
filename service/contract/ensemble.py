"""The ensemble's math on member forward passes and the exact sampler: mixture samples,
likelihoods of observed entries (marginals) and draws of the missing ones (completions).

Contract, so that the service (``Engine``, on its onnxruntime session) and the trainer (offline,
on an exported artifact) answer alike: the same rng draws and float operations. Log-probabilities
are in nats. Rows are [B, D] float32 in {0, 1}, with NaN marking a missing entry.
"""

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.contract.bernoulli import bernoulli_log_prob
from service.contract.masks import input_degrees
from service.contract.mixture import Method, mixture_log_prob, responsibilities
from service.contract.sampler import MemberNet, Sampler
from service.contract.schema import Schema
from service.contract.schema_sampler import SchemaSampler

SET_GROWTH_MARGIN = 1.1  # a growing particle set aims this far past its target ESS


class Cancelled(Exception):
    """The request that wanted this work is gone (timed out); stop spending CPU on it."""


def _stop_if(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled


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


class Ensemble(ABC):
    """Members' nets (for the sampler) and mixture weights; a subclass runs the members' forward
    pass on its runtime. ``schema`` None: every dimension is 0/1."""

    def __init__(
        self, nets: list[MemberNet], weights: Sequence[float], schema: Schema | None = None
    ):
        self.num_members = len(nets)
        self.positions = np.stack([input_degrees(net.ordering) - 1 for net in nets])  # [K, D]
        self.schema = schema
        self.sampler = Sampler(nets) if schema is None else SchemaSampler(nets, schema)
        # The highest level of any discrete dimension: 1 for binary models (-1 when every
        # dimension is a real number, which has no levels).
        self.max_level = 1 if schema is None else int(schema.levels.max()) - 1
        self.dim = self.sampler.dim
        weights = np.asarray(weights, dtype=np.float64)
        # The manifest's sum is within 1e-6 of 1; numpy's choice wants 1e-8.
        self.weights = weights / weights.sum()
        self.active = np.flatnonzero(self.weights > 0)

    @abstractmethod
    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [B, D] -> member log-likelihoods [B, K] float64 and output units [B, K, U]
        float32 (logits [B, K, D] for a binary model)."""

    def log_terms(self, rows: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """[B, K, D] log p_k(x_d | x_<d) from rows [B, D] and the output units [B, K, U]."""
        if self.schema is None:
            return bernoulli_log_prob(rows[:, None, :], outputs)
        return self.schema.log_terms(outputs, rows[:, None, :])

    def mixture(self, per_member: np.ndarray) -> np.ndarray:
        """[B, K] member log-likelihoods -> [B] mixture log-likelihood."""
        return mixture_log_prob(per_member, self.weights)

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
        return self.log_terms(filled, logits)[0][:, observed].sum(axis=1)

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
