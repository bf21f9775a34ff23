"""One strategy's run on the virtual clock: hospitals loop, a server decides, models are scored.

Each hospital loops on its own clock: ask the server what to train from (the current
production model; a synchronous server may make it wait for the next round), really
fine-tune it on its own images (``Runner.train_on``, the recipe of ``medvec simulate``)
for the local budget, whose duration its speed gives, and upload the data vector
against the model it pulled. Where the server keeps only a hospital's newest vector of a
base (``Server.supersedes``: the registry), a hospital whose pulled model has not moved
since its last job continues from its own fine-tuned model (``medvec train
--continue-from``), so that its new vector holds its earlier job's work instead of
discarding it. The server (``Server``) reacts to each arrival; every model it puts into
production is BatchNorm-recalibrated, scored on the validation and test splits and added
to the accuracy curve with the virtual time and the images trained so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medvec.simulation.asynchronous.clock import EventQueue, HospitalClock
from medvec.simulation.asynchronous.config import AsyncConfig
from medvec.simulation.runner import Runner, State

__all__ = ["Job", "Model", "Server", "World"]

EventFn = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Model:
    """A server model: ``version`` counts this strategy's server updates, ``generation``
    the promotions (the registry's bases)."""

    version: int
    generation: int
    state: State = field(repr=False)
    created_at: float


@dataclass(eq=False)
class Job:
    """One local training: ``number``-th of its hospital, from ``start``."""

    id: int
    hospital: int
    number: int
    start: Model
    started_at: float
    trained_at: float
    arrives_at: float
    images: int
    continues: Job | None = field(default=None, repr=False)
    delta: State | None = field(default=None, repr=False)
    cancelled: bool = False

    def start_state(self) -> State:
        """What the job fine-tunes: the model it pulled, or, when it continues a job of
        the same model, where that job ended."""
        if self.continues is None:
            return self.start.state
        from medvec.vectors import apply_vector

        return apply_vector(self.start.state, self.continues.vector)

    @property
    def vector(self) -> State:
        """The data vector the job pushed (against ``start``)."""
        assert self.delta is not None, f"job {self.id} has not been trained"
        return self.delta


@dataclass
class HospitalLog:
    busy_s: float = 0.0
    started: int = 0
    arrived: int = 0
    dropped: int = 0
    # (job, time, generation of the model it started from)
    arrivals: list[tuple[int, float, int]] = field(default_factory=list)
    continued: list[tuple[int, int]] = field(default_factory=list)  # (job, the job it continues)


class Server:
    """A strategy's server side. ``stops_on_budget``: the run ends at the arrival that
    spends the compute budget (asynchronous servers); otherwise the server stops
    starting rounds and the run ends when nothing is left to happen. ``supersedes``: a
    hospital's newer vector of a model replaces its older one, so hospitals continue their
    own work while the model they pulled is unchanged."""

    kind = "server"
    stops_on_budget = True
    supersedes = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._world: World | None = None

    @property
    def world(self) -> World:
        assert self._world is not None, "attach the server to a world first"
        return self._world

    def attach(self, world: World) -> None:
        self._world = world

    def assign(self, hospital: int) -> Model | None:
        """The model ``hospital`` trains from now, or ``None`` to wait until woken."""
        raise NotImplementedError

    def receive(self, job: Job) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The budget is spent: merge what is pending, if the strategy would."""

    def settings(self) -> dict[str, Any]:
        return {}


class World:
    """The clock, the hospitals and one server; ``run`` plays the strategy to the budget."""

    def __init__(
        self,
        config: AsyncConfig,
        runner: Runner,
        parts: list[list[int]],
        clocks: list[HospitalClock],
        server: Server,
        on_event: EventFn | None = None,
    ) -> None:
        self.config, self.runner, self.parts, self.clocks = config, runner, parts, clocks
        self.server = server
        self.emit = on_event or (lambda name, info: None)
        self.queue = EventQueue()
        self.compute = config.compute
        self.spent = 0.0
        self.stopped = False
        self.logs = [HospitalLog() for _ in clocks]
        self.in_flight: list[Job | None] = [None for _ in clocks]
        self.last_job: list[Job | None] = [None for _ in clocks]
        self.versions: list[dict[str, Any]] = []
        self.curve: list[dict[str, Any]] = []
        self.production: Model | None = None
        self._jobs = self._versions = 0
        self._published = (0.0, 0.0)
        self._val: dict[int, dict[str, Any]] = {}
        self.initial = Model(0, 0, runner.base_state, 0.0)

    @property
    def now(self) -> float:
        return self.queue.now

    def at(self, time: float, action: Callable[[], None]) -> None:
        self.queue.at(time, action)

    def next_version(self) -> int:
        self._versions += 1
        return self._versions

    # -- hospitals ------------------------------------------------------------------
    def wake(self, hospital: int) -> None:
        """Let ``hospital`` ask the server again as soon as it is there."""
        when = self.clocks[hospital].available_from(self.now)
        self.at(when, lambda: self._ready(hospital))

    def _ready(self, hospital: int) -> None:
        if self.stopped or self.in_flight[hospital] is not None:
            return
        model = self.server.assign(hospital)
        if model is not None:
            self._start(hospital, model)

    def _start(self, hospital: int, model: Model) -> None:
        clock, log = self.clocks[hospital], self.logs[hospital]
        images = self.config.local_images
        trained = clock.advance(self.now, images / clock.speed)
        job = Job(
            id=self._jobs,
            hospital=hospital,
            number=log.started,
            start=model,
            started_at=self.now,
            trained_at=trained,
            arrives_at=clock.advance(trained, clock.upload_s),
            images=images,
            continues=self._continued(hospital, model),
        )
        self._jobs += 1
        log.started += 1
        self.in_flight[hospital] = job
        self.at(job.trained_at, lambda: self._trained(job))

    def _continued(self, hospital: int, model: Model) -> Job | None:
        """The hospital's previous job when the server supersedes and that job pulled the
        same model (its vector arrived: a dropped job leaves nothing to continue)."""
        previous = self.last_job[hospital]
        if not self.server.supersedes or previous is None or previous.cancelled:
            return None
        return previous if previous.start.version == model.version else None

    def _trained(self, job: Job) -> None:
        if job.cancelled or self.stopped:
            return
        from medvec.vectors import compute_vector

        seed = self.config.seed + job.hospital + 1000 * job.number
        tuned = self.runner.train_on(job.start_state(), self.parts[job.hospital], 1, seed)
        job.delta = compute_vector(job.start.state, tuned)
        self.at(job.arrives_at, lambda: self._arrived(job))

    def _arrived(self, job: Job) -> None:
        if job.cancelled or self.stopped:
            return
        log = self.logs[job.hospital]
        self.in_flight[job.hospital] = None
        log.busy_s += self.clocks[job.hospital].available_seconds(job.started_at, self.now)
        log.arrived += 1
        log.arrivals.append((job.id, self.now, job.start.generation))
        if job.continues is not None:
            log.continued.append((job.id, job.continues.id))
        self.last_job[job.hospital] = job
        self.spent += job.images
        self.server.receive(job)
        if self.server.stops_on_budget and self.spent >= self.compute:
            self.stopped = True
            return
        self.wake(job.hospital)

    def cancel(self, hospital: int) -> None:
        """Stop ``hospital``'s job (a missed deadline): the images it trained by now count as
        spent, its vector is dropped."""
        job = self.in_flight[hospital]
        if job is None:
            return
        clock, log = self.clocks[hospital], self.logs[hospital]
        worked = clock.available_seconds(job.started_at, self.now)
        job.cancelled = True
        self.in_flight[hospital] = None
        self.spent += min(float(job.images), worked * clock.speed)
        log.busy_s += worked
        log.dropped += 1
        self.wake(hospital)

    # -- models ---------------------------------------------------------------------
    def calibrated(self, state: State) -> State:
        return self.runner.calibrated(state) if self.config.calibrate else state

    def val_metrics(self, model: Model) -> dict[str, Any]:
        """The validation metrics of ``model`` (what the promotion gate compares)."""
        if model.version not in self._val:
            metrics = self.runner.metrics(self.runner.load(model.state), "val")
            self._val[model.version] = metrics.model_dump(exclude={"calibration"})
        return self._val[model.version]

    def record(self, model: Model, inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Keep what the server made: ``model``, its inputs (each with its staleness)."""
        row = {
            "version": model.version,
            "generation": model.generation,
            "time": model.created_at,
            "compute": self.spent,
            "inputs": inputs,
            **extra,
        }
        self.versions.append(row)
        return row

    def publish(self, model: Model) -> None:
        """``model`` goes into production: hospitals pull it from now on. It is scored when
        the images trained since the last point of the curve reach ``compute /
        curve_points`` (and at the end of the run), so that a strategy that makes a
        version per arrival costs no more evaluations than one that merges in rounds."""
        self.production = model
        self._published = (self.now, self.spent)
        step = self.compute / self.config.curve_points
        if not self.curve or self.spent - self.curve[-1]["compute"] >= step:
            self._score(model)

    def _score(self, model: Model) -> None:
        """Add production ``model`` to the curve, at the time and compute it was published."""
        test = self.runner.metrics(self.runner.load(model.state), "test")
        val = self.val_metrics(model)
        when, spent = self._published
        point = {
            "time": when,
            "compute": spent,
            "version": model.version,
            "generation": model.generation,
            "accuracy": test.accuracy,
            "auc": test.auc_macro,
            "val_accuracy": val["accuracy"],
        }
        self.curve.append(point)
        self.emit("version", {"strategy": self.server.name, **point})

    # -- the run --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Play the strategy until the budget is spent; its record (see ``result``)."""
        started = time.perf_counter()
        self.emit("strategy", {"strategy": self.server.name})
        self.server.attach(self)
        self.publish(self.initial)
        for hospital in range(len(self.clocks)):
            self.wake(hospital)
        self.queue.run(stop=lambda: self.stopped)
        self.stopped = True
        self.server.finish()
        assert self.production is not None
        if self.curve[-1]["version"] != self.production.version:
            self._score(self.production)
        return self.result(time.perf_counter() - started)

    def result(self, seconds: float) -> dict[str, Any]:
        end = self.now
        hospitals = []
        for index, (clock, log, job) in enumerate(
            zip(self.clocks, self.logs, self.in_flight, strict=True)
        ):
            busy = log.busy_s + (clock.available_seconds(job.started_at, end) if job else 0.0)
            present = clock.available_seconds(0.0, end)
            hospitals.append(
                {
                    "hospital": index,
                    "roles": list(clock.roles),
                    "speed": clock.speed,
                    "samples": len(self.parts[index]),
                    "jobs": log.started,
                    "arrived": log.arrived,
                    "dropped": log.dropped,
                    "arrivals": [list(a) for a in log.arrivals],
                    "continued": [list(c) for c in log.continued],
                    "busy_s": busy,
                    "idle_s": max(0.0, present - busy),
                }
            )
        return {
            "strategy": self.server.name,
            "kind": self.server.kind,
            "settings": self.server.settings(),
            "end_time": end,
            "compute": self.spent,
            "curve": self.curve,
            "versions": self.versions,
            "hospitals": hospitals,
            "seconds": round(seconds, 1),
        }
