"""The baselines, on the same clock, data and budget as MedVec's policy.

* ``Synchronous`` without a deadline is FedAvg (McMahan et al., AISTATS 2017) in rounds:
  the hospitals present when a round opens train from the same model; the round waits
  for the last of them (a participant that goes offline holds it until it is back),
  then the weighted mean by samples becomes the next model. Hospitals that finish early
  and hospitals absent at the opening wait for the next round.
* ``Synchronous`` with a deadline closes a round at ``deadline_s`` (or when all arrived):
  the late participants are stopped, what they trained is spent, their vectors dropped.
* ``FedAsync`` (Xie et al., "Asynchronous Federated Optimization", 2019) mixes every
  arriving model into the server's: ``x <- (1 - a_t) x + a_t x_new`` with
  ``a_t = alpha (1 + staleness) ** -power``.
* ``FedBuff`` (Nguyen et al., "Federated Learning with Buffered Asynchronous
  Aggregation", AISTATS 2022) buffers K updates, then steps
  ``x <- x + lr / K sum_i (1 + s_i) ** -power delta_i``.

Staleness here counts server updates since the model a hospital pulled. Every new
server model is BatchNorm-recalibrated like MedVec's (``AsyncConfig.calibrate``), so
the comparison is of the schedules, not of the statistics.
"""

from __future__ import annotations

from typing import Any

from medvec.merging.weighting import staleness_weights
from medvec.simulation.asynchronous.world import Job, Model, Server

__all__ = ["FedAsync", "FedBuff", "Synchronous"]


def _input(job: Job, staleness: int, weight: float) -> dict[str, Any]:
    return {
        "job": job.id,
        "hospital": job.hospital,
        "pulled_version": job.start.version,
        "staleness": staleness,
        "weight": weight,
    }


class Synchronous(Server):
    """Rounds of FedAvg; ``deadline_s`` set: late vectors are dropped."""

    stops_on_budget = False

    def __init__(self, name: str, deadline_s: float | None = None) -> None:
        super().__init__(name)
        self.kind = "sync" if deadline_s is None else "sync_deadline"
        self.deadline_s = deadline_s
        self.round = 0
        self.participants: set[int] = set()
        self.started: set[int] = set()
        self.arrived: dict[int, Job] = {}

    def settings(self) -> dict[str, Any]:
        return {"deadline_s": self.deadline_s}

    def attach(self, world: Any) -> None:
        super().attach(world)
        world.at(0.0, self._open)

    def _open(self) -> None:
        world = self.world
        if world.spent >= world.compute:
            return
        now = world.now
        present = {h for h, c in enumerate(world.clocks) if c.is_available(now)}
        if not present:
            world.at(min(c.available_from(now) for c in world.clocks), self._open)
            return
        self.round += 1
        self.participants, self.started, self.arrived = present, set(), {}
        for hospital in sorted(present):
            world.wake(hospital)
        if self.deadline_s is not None:
            number = self.round
            world.at(now + self.deadline_s, lambda: self._close(number))

    def assign(self, hospital: int) -> Model | None:
        if hospital in self.participants and hospital not in self.started:
            self.started.add(hospital)
            return self.world.production
        return None

    def receive(self, job: Job) -> None:
        self.arrived[job.hospital] = job
        if len(self.arrived) == len(self.participants):
            self._close(self.round)

    def _close(self, number: int) -> None:
        if number != self.round or not self.participants:
            return
        world = self.world
        for hospital in sorted(self.participants - set(self.arrived)):
            world.cancel(hospital)
        jobs = [self.arrived[h] for h in sorted(self.arrived)]
        self.participants = set()
        if jobs:
            self._merge(jobs)
        self._open()

    def _merge(self, jobs: list[Job]) -> None:
        from medvec.merging import merge_state_dicts

        world = self.world
        current = world.production
        assert current is not None
        weights = [float(len(world.parts[j.hospital])) for j in jobs]
        merged = merge_state_dicts(
            current.state, [j.vector for j in jobs], strategy="weighted_mean", weights=weights
        )
        model = Model(
            world.next_version(), current.generation + 1, world.calibrated(merged), world.now
        )
        inputs = [_input(j, 0, w) for j, w in zip(jobs, weights, strict=True)]
        world.record(model, inputs, round=self.round)
        world.publish(model)


class FedAsync(Server):
    """Merge at every arrival with a staleness-scaled mixing weight."""

    kind = "fedasync"

    def __init__(self, name: str, alpha: float, power: float) -> None:
        super().__init__(name)
        self.alpha, self.power = alpha, power

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "power": self.power}

    def mixing_weight(self, staleness: int) -> float:
        return self.alpha * staleness_weights([staleness], self.power)[0]

    def assign(self, hospital: int) -> Model | None:
        return self.world.production

    def receive(self, job: Job) -> None:
        from medvec.vectors import apply_vector, compute_vector

        world, current = self.world, self.world.production
        assert current is not None
        staleness = current.version - job.start.version
        weight = self.mixing_weight(staleness)
        local = apply_vector(job.start.state, job.vector)
        mixed = apply_vector(current.state, compute_vector(current.state, local), scale=weight)
        model = Model(world.next_version(), 0, world.calibrated(mixed), world.now)
        world.record(model, [_input(job, staleness, weight)])
        world.publish(model)


class FedBuff(Server):
    """Buffer ``k`` updates, then one server step of ``lr``."""

    kind = "fedbuff"

    def __init__(self, name: str, k: int, lr: float, power: float) -> None:
        super().__init__(name)
        self.k, self.lr, self.power = k, lr, power
        self.buffer: list[tuple[Job, int]] = []

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "lr": self.lr, "power": self.power}

    def assign(self, hospital: int) -> Model | None:
        return self.world.production

    def receive(self, job: Job) -> None:
        current = self.world.production
        assert current is not None
        self.buffer.append((job, current.version - job.start.version))
        if len(self.buffer) >= self.k:
            self._step()

    def finish(self) -> None:
        if self.buffer:
            self._step()

    def _step(self) -> None:
        from medvec.merging import merge_state_dicts

        world, current = self.world, self.world.production
        assert current is not None
        jobs = [job for job, _ in self.buffer]
        weights = staleness_weights([s for _, s in self.buffer], self.power)
        merged = merge_state_dicts(
            current.state,
            [j.vector for j in jobs],
            strategy="task_arithmetic",
            params={"lambda": self.lr / len(jobs)},
            weights=weights,
        )
        model = Model(world.next_version(), 0, world.calibrated(merged), world.now)
        inputs = [_input(j, s, w) for (j, s), w in zip(self.buffer, weights, strict=True)]
        world.record(model, inputs)
        self.buffer = []
        world.publish(model)
