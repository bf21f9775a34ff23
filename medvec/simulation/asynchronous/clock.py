"""The virtual clock: hospitals' speeds, upload times and availability, and the event queue.

Training in the simulation is real; how long it takes is not measured but computed: a
hospital trains ``images / speed`` seconds of its own available time, then uploads its
vector in ``bytes / bandwidth`` seconds. Time a hospital spends offline does not count:
work started before an offline stretch resumes after it.

Defaults (``ClockConfig``): speeds log-normal around a median (sigma 1, seeded), one
hospital ``straggler_slowdown`` times slower than the median, one that joins at
``late_join`` of the run, one offline from ``offline[0]`` to ``offline[1]`` of the run.
"The run" is the horizon the caller gives: the time the hospitals together need to
spend the compute budget (``horizon``).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ClockConfig", "EventQueue", "HospitalClock", "hospital_clocks", "horizon"]

STRAGGLER, LATE_JOINER, OFFLINE = "straggler", "late joiner", "offline"


class ClockConfig(BaseModel):
    """How fast each hospital trains and uploads, and when it is there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_speed: float = Field(default=50.0, gt=0, description="images per second")
    speed_sigma: float = Field(default=1.0, ge=0, description="log-normal sigma of the speeds")
    straggler_slowdown: float | None = Field(
        default=10.0, gt=1, description="one hospital this many times slower than the median"
    )
    bandwidth: float = Field(default=20e6, gt=0, description="upload bytes per second")
    late_join: float | None = Field(
        default=1 / 3, gt=0, lt=1, description="one hospital joins at this share of the run"
    )
    offline: tuple[float, float] | None = Field(
        default=(0.25, 0.75), description="one hospital is offline over this share of the run"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _window(self) -> ClockConfig:
        if self.offline is not None and not 0 <= self.offline[0] < self.offline[1]:
            raise ValueError(f"offline must be (start, end) with 0 <= start < end: {self.offline}")
        return self


@dataclass(frozen=True)
class HospitalClock:
    """One hospital's timing: ``speed`` images per second, ``upload_s`` per vector, present
    from ``joins_at`` except in the ``offline`` windows (sorted, disjoint)."""

    index: int
    speed: float
    upload_s: float
    joins_at: float = 0.0
    offline: tuple[tuple[float, float], ...] = ()
    roles: tuple[str, ...] = ()

    def available_from(self, t: float) -> float:
        """The first moment at or after ``t`` the hospital is there."""
        t = max(t, self.joins_at)
        for start, end in self.offline:
            if start <= t < end:
                t = end
        return t

    def is_available(self, t: float) -> bool:
        return self.available_from(t) == t

    def advance(self, start: float, seconds: float) -> float:
        """When ``seconds`` of work begun at ``start`` end, offline stretches skipped."""
        t = self.available_from(start)
        remaining = seconds
        for begin, end in self.offline:
            if end <= t:
                continue
            if t + remaining <= begin:
                break
            remaining -= begin - t
            t = end
        return t + remaining

    def available_seconds(self, start: float, end: float) -> float:
        """Seconds of ``[start, end]`` the hospital is there."""
        start = max(start, self.joins_at)
        if end <= start:
            return 0.0
        away = sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.offline)
        return end - start - away


def horizon(compute: float, speeds: Sequence[float]) -> float:
    """Seconds the hospitals together need to train ``compute`` images: the run's length
    that the late joiner's and the offline hospital's moments are shares of."""
    return float(compute / sum(speeds))


def _speeds(config: ClockConfig, n: int, rng: np.random.Generator) -> list[float]:
    draws = config.median_speed * np.exp(config.speed_sigma * rng.standard_normal(n))
    return [float(x) for x in draws]


def hospital_clocks(
    config: ClockConfig, n: int, compute: float, vector_bytes: int, seed: int = 0
) -> list[HospitalClock]:
    """``n`` hospitals' clocks for a run of ``compute`` images, drawn from the clock's
    seed and the run's ``seed``: distinct hospitals are the straggler, the late joiner
    and the offline one, as many of them as ``n`` allows."""
    rng = np.random.default_rng([config.seed, seed])
    speeds = _speeds(config, n, rng)
    wanted = [
        (STRAGGLER, config.straggler_slowdown is not None),
        (LATE_JOINER, config.late_join is not None),
        (OFFLINE, config.offline is not None),
    ]
    order = [int(i) for i in rng.permutation(n)]
    active = [name for name, on in wanted if on][:n]
    roles = {name: order[k] for k, name in enumerate(active)}
    if STRAGGLER in roles:
        assert config.straggler_slowdown is not None
        speeds[roles[STRAGGLER]] = config.median_speed / config.straggler_slowdown
    length = horizon(compute, speeds)
    upload = vector_bytes / config.bandwidth
    clocks = []
    for index, speed in enumerate(speeds):
        joins = offline = None
        if roles.get(LATE_JOINER) == index and config.late_join is not None:
            joins = config.late_join * length
        if roles.get(OFFLINE) == index and config.offline is not None:
            offline = (config.offline[0] * length, config.offline[1] * length)
        clocks.append(
            HospitalClock(
                index=index,
                speed=speed,
                upload_s=upload,
                joins_at=joins or 0.0,
                offline=(offline,) if offline else (),
                roles=tuple(name for name, who in roles.items() if who == index),
            )
        )
    return clocks


@dataclass(order=True)
class _Event:
    time: float
    seq: int
    action: Callable[[], None] = field(compare=False)


@dataclass
class EventQueue:
    """Actions ordered by virtual time (ties: the order they were scheduled)."""

    now: float = 0.0
    _heap: list[_Event] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def at(self, time: float, action: Callable[[], None]) -> None:
        if time < self.now:
            raise ValueError(f"cannot schedule at {time} before now ({self.now})")
        heapq.heappush(self._heap, _Event(time, next(self._seq), action))

    def run(self, stop: Callable[[], bool]) -> None:
        """Run the actions in time order until none is left or ``stop()`` is true."""
        while self._heap and not stop():
            event = heapq.heappop(self._heap)
            self.now = event.time
            event.action()
