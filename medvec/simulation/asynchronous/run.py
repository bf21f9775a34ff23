"""Run MedVec's policy and every baseline on one clock, one data split, one budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvec.simulation.asynchronous.baselines import FedAsync, FedBuff, Synchronous
from medvec.simulation.asynchronous.clock import HospitalClock, horizon, hospital_clocks
from medvec.simulation.asynchronous.config import BASELINES, AsyncConfig
from medvec.simulation.asynchronous.registry import RegistryServer
from medvec.simulation.asynchronous.world import Server, World
from medvec.simulation.runner import Runner, labels_of, partition_indices

__all__ = ["AsyncResult", "make_servers", "run_async"]

EventFn = Callable[[str, dict[str, Any]], None]


@dataclass
class AsyncResult:
    """Every strategy's record (``World.result``) and what they shared."""

    config: AsyncConfig
    arch: str
    horizon: float
    clocks: list[dict[str, Any]]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "arch": self.arch,
            "compute": self.config.compute,
            "horizon": self.horizon,
            "hospitals": self.clocks,
            "runs": self.runs,
            "seconds": round(self.seconds, 1),
        }


def _deadline(config: AsyncConfig, upload_s: float) -> float:
    """``deadline_factor`` times the job of a hospital of median speed."""
    job = config.local_images / config.clock.median_speed + upload_s
    return config.baseline.deadline_factor * job


def make_servers(config: AsyncConfig, upload_s: float) -> list[Server]:
    """The policy variants in ``config.policies``, then the baselines it names."""
    servers: list[Server] = [
        RegistryServer(name, policy) for name, policy in config.policies.items()
    ]
    b = config.baseline
    makers: dict[str, Callable[[], Server]] = {
        "sync": lambda: Synchronous("sync"),
        "sync_deadline": lambda: Synchronous("sync_deadline", _deadline(config, upload_s)),
        "fedasync": lambda: FedAsync("fedasync", b.fedasync_alpha, b.fedasync_power),
        "fedbuff": lambda: FedBuff("fedbuff", b.fedbuff_k, b.fedbuff_lr, b.fedbuff_power),
    }
    unknown = [name for name in config.baselines if name not in makers]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}: use some of {list(BASELINES)}")
    return servers + [makers[name]() for name in config.baselines]


def _clock_row(clock: HospitalClock, samples: int) -> dict[str, Any]:
    return {
        "hospital": clock.index,
        "roles": list(clock.roles),
        "speed": clock.speed,
        "upload_s": clock.upload_s,
        "joins_at": clock.joins_at,
        "offline": [list(w) for w in clock.offline],
        "samples": samples,
    }


def run_async(
    config: AsyncConfig,
    base: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_event: EventFn | None = None,
    finished: Mapping[str, dict[str, Any]] | None = None,
) -> AsyncResult:
    """Every strategy of ``config`` from the base model file ``base``.

    ``finished``: records of strategies already run on this very setting (every job is
    seeded by the setting's seed, hospital and job number alone, so a strategy's run does
    not depend on the others); they are taken as they are instead of run again."""
    from medvec.training import resolve_device
    from medvec.vectors import floating_keys

    started = time.perf_counter()
    point = config.point()
    runner = Runner(point, base, datasets_dir, resolve_device(device))
    parts = [p for p in partition_indices(labels_of(runner.train), point) if p]
    state = runner.base_state
    vector_bytes = sum(state[k].numel() * state[k].element_size() for k in floating_keys(state))
    clocks = hospital_clocks(config.clock, len(parts), config.compute, vector_bytes, config.seed)
    result = AsyncResult(
        config=config,
        arch=runner.spec.arch,
        horizon=horizon(config.compute, [c.speed for c in clocks]),
        clocks=[_clock_row(c, len(p)) for c, p in zip(clocks, parts, strict=True)],
    )
    done = finished or {}
    for server in make_servers(config, clocks[0].upload_s):
        if server.name in done:
            result.runs[server.name] = done[server.name]
            continue
        world = World(config, runner, parts, clocks, server, on_event)
        result.runs[server.name] = world.run()
    result.seconds = time.perf_counter() - started
    return result
