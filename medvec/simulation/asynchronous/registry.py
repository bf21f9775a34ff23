"""MedVec's own server: the registry's auto-merge, selection, merge and promotion rules.

Every decision is the registry's code, called on the simulation's records instead of
database rows:

* **when to merge** (``medvec.merging.policy.merge_due``): K vectors of the current base
  arrived since its last merge, or (``every_s``) anything arrived and the period passed;
* **what to merge** (``medvec.merging.policy.latest_per_hospital``): each hospital's
  newest vector of the current base; with ``stale = "weight"`` a hospital without one
  gives its newest vector of an older generation, applied to the current base as it is,
  and a vector of an older generation that no promoted version took is taken beside the
  hospital's newer one (the registry's rows of older bases are never superseded by a
  vector of a newer base);
* **weights** (``MergeSpec.weight``): samples times ``(1 + staleness) ** -power``;
* **the merge** (``merge_state_dicts``): the weighted mean, or a step of ``server_lr``
  along it (task arithmetic with ``lambda = server_lr / sum w``);
* **BatchNorm recalibration** on the validation images (``recalibrate_bn``);
* **promotion** (``medvec.gates.gate_checks``): the candidate's validation metrics
  against production's, as ``MEDVEC_AUTO_PROMOTE`` does;
* **generations** (``MEDVEC_AUTO_GENERATION``): every merged version becomes the base of
  the next generation, which hospitals pull from then on, while production follows the
  gate (``generations = "promoted"``: only a promoted version does).

The registry would also merge an older base whose vectors reach K (its policy looks at
every base); here only the current base is merged, since a version of an older
generation would have to pass the gate against a newer production model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medvec.gates import gate_checks
from medvec.merging.policy import latest_per_hospital, merge_due
from medvec.merging.spec import MergeSpec
from medvec.simulation.asynchronous.config import PolicyConfig
from medvec.simulation.asynchronous.world import Job, Model, Server
from medvec.simulation.runner import State

__all__ = ["RegistryServer", "merge_spec"]


@dataclass(frozen=True)
class VectorRecord:
    """An accepted vector as selection reads it (the attributes of the registry's row)."""

    id: str
    hospital_id: str
    created_at: float
    generation: int
    samples: int
    job: Job = field(repr=False)


def merge_spec(policy: PolicyConfig, weights_total: float | None = None) -> MergeSpec:
    """The merge the policy asks for: the weighted mean by samples, or with
    ``server_lr != 1`` task arithmetic at ``server_lr / sum w`` (``weights_total``)."""
    common = {"staleness_power": policy.staleness_power, "rebase": policy.stale == "weight"}
    if policy.server_lr == 1.0 or weights_total is None:
        return MergeSpec.checked(strategy="weighted_mean", **common)
    lam = policy.server_lr / weights_total
    return MergeSpec.checked(
        strategy="task_arithmetic", params={"lambda": lam}, weighting="samples", **common
    )


class RegistryServer(Server):
    """The registry's policy ``policy`` (its promotion gate included)."""

    kind = "medvec"
    supersedes = True

    def __init__(self, name: str, policy: PolicyConfig) -> None:
        super().__init__(name)
        self.policy = policy
        # each hospital's newest vector of each generation that selection may still take
        self.latest: dict[tuple[str, int], VectorRecord] = {}
        self.in_lineage: set[str] = set()
        self.last_merge_at: float | None = None  # of the current base
        self.merged_at = -1.0  # the last merge of any base
        self.production_val: dict[str, Any] | None = None  # none in production yet
        self.head: Model | None = None  # the newest generation's base (None: the initial)
        self._timer: float | None = None

    def settings(self) -> dict[str, Any]:
        return {"policy": self.policy.model_dump()}

    @property
    def base(self) -> Model:
        """The current generation's base: what hospitals pull and the policy merges."""
        return self.head or self.world.initial

    def assign(self, hospital: int) -> Model:
        return self.base

    def receive(self, job: Job) -> None:
        vector = VectorRecord(
            id=f"v{job.id}",
            hospital_id=str(job.hospital),
            created_at=self.world.now,
            generation=job.start.generation,
            samples=len(self.world.parts[job.hospital]),
            job=job,
        )
        # supersedes the hospital's previous vector of the same base, as the registry does
        self.latest[(vector.hospital_id, vector.generation)] = vector
        self._forget_merged()
        self._check()

    def finish(self) -> None:
        """The end of the run stands for the schedule's next tick: whatever arrived since
        the last merge (stale vectors too) is merged once more."""
        if any(v.created_at > self.merged_at for v in self.latest.values()):
            self._merge()

    # -- the policy -----------------------------------------------------------------
    def _new_vectors(self) -> int:
        """Current vectors of the current base that arrived after its last merge (the
        registry's count); with ``count_stale``, every vector that arrived after the last
        merge, stale ones too, since the merge takes them."""
        if self.policy.count_stale:
            return sum(1 for v in self.latest.values() if v.created_at > self.merged_at)
        last = self.last_merge_at
        return sum(
            1
            for v in self.latest.values()
            if v.generation == self.base.generation and (last is None or v.created_at > last)
        )

    def _stale_vectors(self) -> int:
        """Vectors of older generations that arrived after the current base's last merge
        and that its merge would take (the registry's ``worker.policy.activity``); none
        when they are counted toward k already or left out."""
        if self.policy.count_stale or self.policy.stale != "weight":
            return 0
        last = self.last_merge_at
        return sum(
            1
            for v in self.latest.values()
            if v.generation < self.base.generation
            and v.id not in self.in_lineage
            and (last is None or v.created_at > last)
        )

    def _check(self) -> None:
        if self.world.stopped:
            return
        now, last, every = self.world.now, self.last_merge_at, self.policy.every_s
        new, stale = self._new_vectors(), self._stale_vectors()
        since = None if last is None else now - last
        if merge_due(new, since, k=self.policy.k, every_s=every, stale_vectors=stale):
            self._merge()
        elif every is not None and new + stale and last is not None and self._timer != last + every:
            self._timer = last + every
            self.world.at(last + every, self._check)

    def _selection(self) -> list[tuple[VectorRecord, int]]:
        current = self.base.generation
        oldest = 0 if self.policy.stale == "weight" else current
        generations = [
            (current - g, [v for v in self._by_time() if v.generation == g])
            for g in range(current, oldest - 1, -1)
        ]
        return latest_per_hospital(
            generations, in_base=self.in_lineage, skip_in_base=self.policy.skip_merged
        )

    def _by_time(self) -> list[VectorRecord]:
        return sorted(self.latest.values(), key=lambda v: (v.created_at, v.id))

    def _forget_merged(self) -> None:
        """Drop the records selection can no longer take (a hospital's vector of an older
        generation already inside production), so that the run keeps only the vectors
        that can still be merged in memory."""
        newest: dict[str, int] = {}
        for hospital, generation in self.latest:
            newest[hospital] = max(generation, newest.get(hospital, generation))
        self.latest = {
            key: v
            for key, v in self.latest.items()
            if key[1] == newest[key[0]] or v.id not in self.in_lineage
        }

    def _merge(self) -> None:
        world, base = self.world, self.base
        self.merged_at = world.now
        picked = self._selection()
        if not picked:  # only stale vectors arrived, and the policy leaves them out
            return
        weights = [merge_spec(self.policy).weight(v.samples, s) for v, s in picked]
        merged = self._combine(base, [v for v, _ in picked], weights)
        candidate = Model(
            world.next_version(), base.generation + 1, world.calibrated(merged), world.now
        )
        promoted, verdict = self._gate(candidate)
        inputs = [_input(v, s, w) for (v, s), w in zip(picked, weights, strict=True)]
        world.record(candidate, inputs, promoted=promoted, base_version=base.version, **verdict)
        if promoted or self.policy.generations == "merged":
            self.in_lineage.update(v.id for v, _ in picked)
            self._forget_merged()
            self.last_merge_at = None  # the new base has had no merge yet
            self.head = candidate
        else:
            self.last_merge_at = world.now
        if promoted:
            world.publish(candidate)

    def _combine(self, base: Model, vectors: list[VectorRecord], weights: list[float]) -> State:
        """``base`` plus the policy's merge of ``vectors`` (applied as they are: rebase)."""
        from medvec.merging import merge_state_dicts

        spec = merge_spec(self.policy, sum(weights))
        return merge_state_dicts(
            base.state,
            [v.job.vector for v in vectors],
            strategy=spec.strategy,
            params=spec.params,
            weights=spec.engine_weights(weights),
            seed=spec.seed,
        )

    def _gate(self, candidate: Model) -> tuple[bool, dict[str, Any]]:
        """Whether ``candidate`` replaces production, and the gate's verdict: its validation
        accuracy and the metrics it failed. Without a gate every merge is promoted."""
        gate = self.policy.gate
        if gate is None:
            return True, {}
        val = self.world.val_metrics(candidate)
        checks = gate_checks(val, self.production_val, gate)
        failed = sorted({c.metric for c in checks if not c.passed})
        if not failed:
            self.production_val = val
        return not failed, {"val_accuracy": val["accuracy"], "gate_failed": failed}


def _input(vector: VectorRecord, staleness: int, weight: float) -> dict[str, Any]:
    job = vector.job
    return {
        "vector": vector.id,
        "job": job.id,
        "hospital": job.hospital,
        "pulled_version": job.start.version,
        "generation": vector.generation,
        "staleness": staleness,
        "weight": weight,
        "arrived_at": vector.created_at,
    }
