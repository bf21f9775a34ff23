"""The asynchronous simulation's virtual clock: hospitals' timing and the event queue."""

from __future__ import annotations

import pytest

from medvec.simulation.asynchronous import ClockConfig, HospitalClock, hospital_clocks
from medvec.simulation.asynchronous.baselines import FedAsync
from medvec.simulation.asynchronous.clock import EventQueue, horizon


def test_work_pauses_while_the_hospital_is_offline() -> None:
    clock = HospitalClock(index=0, speed=10.0, upload_s=1.0, joins_at=2.0, offline=((5.0, 9.0),))
    assert clock.available_from(0.0) == 2.0  # not joined yet
    assert clock.available_from(6.0) == 9.0 and clock.is_available(4.0)
    assert clock.advance(2.0, 2.0) == 4.0  # before the window
    assert clock.advance(4.0, 3.0) == 11.0  # 1 s before it, 2 s after it
    assert clock.advance(6.0, 1.0) == 10.0  # started while away: from its return
    assert clock.available_seconds(0.0, 12.0) == pytest.approx(10.0 - 4.0)


def test_default_clock_has_a_straggler_a_late_joiner_and_an_offline_hospital() -> None:
    config = ClockConfig()
    clocks = hospital_clocks(config, 10, compute=30_000, vector_bytes=20_000_000, seed=3)
    roles = {role: c for c in clocks for role in c.roles}
    assert set(roles) == {"straggler", "late joiner", "offline"}
    assert len({c.index for c in roles.values()}) == 3  # three distinct hospitals
    assert roles["straggler"].speed == pytest.approx(config.median_speed / 10)
    length = horizon(30_000, [c.speed for c in clocks])
    assert roles["late joiner"].joins_at == pytest.approx(length / 3)
    (window,) = roles["offline"].offline
    assert window == pytest.approx((length / 4, 3 * length / 4))
    assert all(c.upload_s == pytest.approx(1.0) for c in clocks)  # 20 MB at 20 MB/s
    others = sorted(c.speed for c in clocks if c is not roles["straggler"])
    assert others[0] < config.median_speed < others[-1]  # log-normal around the median
    # seeded: the same seed draws the same clocks, another seed others
    assert hospital_clocks(config, 10, 30_000, 20_000_000, seed=3) == clocks
    assert hospital_clocks(config, 10, 30_000, 20_000_000, seed=4) != clocks


def test_roles_can_be_switched_off_and_fit_few_hospitals() -> None:
    plain = ClockConfig(straggler_slowdown=None, late_join=None, offline=None, speed_sigma=0)
    clocks = hospital_clocks(plain, 4, 1000, 100)
    assert all(c.roles == () and c.speed == plain.median_speed for c in clocks)
    two = hospital_clocks(ClockConfig(), 2, 1000, 100)
    assert sorted(r for c in two for r in c.roles) == ["late joiner", "straggler"]


def test_events_run_in_time_order_and_never_in_the_past() -> None:
    queue, seen = EventQueue(), []
    queue.at(2.0, lambda: seen.append("b"))

    def first() -> None:
        seen.append("a")
        queue.at(1.5, lambda: seen.append("a2"))

    queue.at(1.0, first)
    queue.at(2.0, lambda: seen.append("c"))  # same time: the order scheduled
    queue.run(stop=lambda: False)
    assert seen == ["a", "a2", "b", "c"] and queue.now == 2.0
    with pytest.raises(ValueError, match="before now"):
        queue.at(1.0, lambda: None)


def test_fedasync_mixing_weight_falls_with_staleness() -> None:
    server = FedAsync("fedasync", alpha=0.6, power=0.5)
    assert server.mixing_weight(0) == pytest.approx(0.6)
    assert server.mixing_weight(3) == pytest.approx(0.6 / 2)
