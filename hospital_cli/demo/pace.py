"""How fast each simulated hospital works, when it joins, and the run's compute budget.

The demo's training is real and shares this machine's CPU, so a hospital's speed is
modelled, not measured: a job trains in one of the demo's training slots for as long
as the CPU takes, then the hospital waits ``slowdown - 1`` times that long before it
pushes, without holding a slot (a machine ``slowdown`` times slower than this one's
share of it). Everyone's slowdown is 1 except the **straggler**'s (10 by default); the
**late joiner** starts once a share of the budget (a third by default) is trained.

The budget is the lockstep schedule's work: ``generations`` rounds of every hospital's
``epochs`` over its own images, the late joiner missing the rounds that open before its
share. The asynchronous schedule starts jobs until as many images are claimed, and
waits for the jobs it started (the late joiner starts once a third have arrived).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

STRAGGLER, LATE_JOINER = "straggler", "late joiner"


@dataclass(frozen=True)
class Pace:
    """One hospital's speed: ``slowdown`` stretches each job's training time, and the
    hospital starts once ``joins_at`` of the budget is trained (0: from the start)."""

    slowdown: float = 1.0
    joins_at: float = 0.0
    role: str = ""

    def present_in_round(self, number: int, rounds: int) -> bool:
        """Whether a lockstep round ``number`` (1-based) of ``rounds`` opens after the
        hospital joined: the round opens once ``(number - 1) / rounds`` of the work is done."""
        return (number - 1) / rounds >= self.joins_at


def hospital_paces(
    hospitals: int, *, straggler_slowdown: float, late_join: float, seed: int
) -> list[Pace]:
    """Every hospital's pace; distinct hospitals, drawn with ``seed``, are the straggler
    (none when ``straggler_slowdown`` is 1) and the late joiner (none when ``late_join``
    is 0). Each role needs another hospital at the usual pace from the start, so two
    hospitals have a straggler only and one has neither."""
    order = list(range(hospitals))
    random.Random(f"paces-{seed}").shuffle(order)
    paces = [Pace() for _ in range(hospitals)]
    if straggler_slowdown > 1 and hospitals >= 2:
        paces[order[0]] = Pace(slowdown=straggler_slowdown, role=STRAGGLER)
    if late_join > 0 and hospitals >= 3:
        paces[order[1]] = Pace(joins_at=late_join, role=LATE_JOINER)
    return paces


def lockstep_images(sizes: list[int], paces: list[Pace], rounds: int, epochs: int) -> int:
    """Images the lockstep schedule trains: every hospital present in a round trains
    ``epochs`` over its own images."""
    return sum(
        epochs * size
        for number in range(1, rounds + 1)
        for size, pace in zip(sizes, paces, strict=True)
        if pace.present_in_round(number, rounds)
    )


class Budget:
    """The images all hospitals may train (thread-safe): claimed when a job starts,
    counted again when its vector arrives.

    A job starts only while some budget is unclaimed, and every started job is pushed,
    so the run trains the budget plus less than one job per hospital, and no hospital's
    work is thrown away (a straggler's last job included).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.claimed = 0
        self.trained = 0
        self.closed = False
        self._changed = threading.Condition()

    def claim(self, images: int) -> bool:
        """Take ``images`` for a job; ``False`` once the budget is all claimed."""
        with self._changed:
            if self.closed or self.claimed >= self.total:
                return False
            self.claimed += images
            return True

    def arrived(self, images: int) -> None:
        """Count a pushed job's images."""
        with self._changed:
            self.trained += images
            self._changed.notify_all()

    def close(self) -> None:
        """End the run: no job starts any more, a late joiner stops waiting."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_for_share(self, share: float) -> bool:
        """Block until ``share`` of the budget has arrived (a late joiner's start);
        ``False`` when the run ended first."""
        with self._changed:
            self._changed.wait_for(lambda: self.trained >= share * self.total or self.closed)
            return not self.closed
