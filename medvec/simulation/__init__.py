"""In-process simulation of N hospitals and every merge strategy, and the reproduction sweep."""

from medvec.simulation.run import (
    DEFAULT_STRATEGIES,
    SimulationConfig,
    SimulationResult,
    run_simulation,
    summary_row,
)
from medvec.simulation.runner import partition_indices
from medvec.simulation.sweep import SweepConfig, SweepOutcome, markdown_table, run_sweep

__all__ = [
    "DEFAULT_STRATEGIES",
    "SimulationConfig",
    "SimulationResult",
    "SweepConfig",
    "SweepOutcome",
    "markdown_table",
    "partition_indices",
    "run_simulation",
    "run_sweep",
    "summary_row",
]
