"""The asynchronous simulation: hospitals on a virtual clock, MedVec's registry policy and
the baselines (synchronous FedAvg, with a deadline, FedAsync, FedBuff) on the same data,
base and compute budget. See docs/merging.md ("Asynchronous merging")."""

from medvec.simulation.asynchronous.clock import ClockConfig, HospitalClock, hospital_clocks
from medvec.simulation.asynchronous.config import (
    BASELINES,
    AsyncConfig,
    BaselineConfig,
    PolicyConfig,
)
from medvec.simulation.asynchronous.report import SUMMARY_COLUMNS, hospital_checks, summarize
from medvec.simulation.asynchronous.run import AsyncResult, run_async

__all__ = [
    "BASELINES",
    "SUMMARY_COLUMNS",
    "AsyncConfig",
    "AsyncResult",
    "BaselineConfig",
    "ClockConfig",
    "HospitalClock",
    "PolicyConfig",
    "hospital_checks",
    "hospital_clocks",
    "run_async",
    "summarize",
]
