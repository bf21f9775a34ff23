"""The demo's figure: production's test accuracy against wall time, every merged version
as a point, the lockstep schedule's time for the same work marked, and the references
(the mean hospital trained alone, the centralized model) as horizontal lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hospital_cli.demo.report import lockstep_floor, production_curve
from hospital_cli.demo.state import DemoReport

MARKERS = {"weighted_mean": "o", "task_arithmetic": "s", "ties": "^", "median": "D"}
COLOURS = {"asynchronous": "tab:blue", "lockstep": "tab:orange"}


def _schedule(report: DemoReport) -> str:
    return "lockstep" if report.settings.lockstep else "asynchronous"


def _production(ax: Any, report: DemoReport) -> None:
    """Production's accuracy as a step line from each promotion to the schedule's end."""
    curve = production_curve(report)
    name, colour = _schedule(report), COLOURS[_schedule(report)]
    if curve:
        xs = [t for t, _, _ in curve] + [max(report.schedule_s, curve[-1][0])]
        ys = [a for _, a, _ in curve] + [curve[-1][1]]
        ax.step(xs, ys, where="post", color=colour, linewidth=2, label=f"production, {name}")
        ax.scatter(xs[:-1], ys[:-1], color=colour, s=20, zorder=3)
    ax.axvline(report.schedule_s, color=colour, linestyle="-", linewidth=0.8)
    ax.text(report.schedule_s, 0.02, f" {name} ends ({report.schedule_s:.0f} s)", color=colour,
            rotation=90, va="bottom", fontsize=7, transform=ax.get_xaxis_transform())  # fmt: skip


def plot_report(report: DemoReport, path: Path, *, compare: DemoReport | None = None) -> Path:
    """Write the figure of ``report`` to ``path``; ``compare``: a run of the other schedule
    on the same data, drawn beside it. An asynchronous run alone marks the least time
    the lockstep schedule would need (``report.lockstep_floor``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    versions = [v for v in report.versions if v.metrics and v.created_s is not None]
    for strategy in sorted({v.strategy for v in versions}):
        points = [(v.created_s, v.metrics["accuracy"]) for v in versions if v.strategy == strategy]
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, marker=MARKERS.get(strategy, "x"), s=18, color="grey", alpha=0.6,
                   label=f"merged version, {_schedule(report)}: {strategy}")  # fmt: skip
    _production(ax, report)
    if compare is not None:
        _production(ax, compare)
    floor = lockstep_floor(report)
    if compare is None and floor is not None:
        rounds = report.settings.generations
        label = f"lockstep: at least {floor:.0f} s ({rounds} generations wait for the straggler)"
        ax.axvline(floor, color=COLOURS["lockstep"], linestyle="--", linewidth=1.2, label=label)
    if report.alone:
        alone = sum(m["accuracy"] for m in report.alone.values()) / len(report.alone)
        ax.axhline(alone, color="firebrick", linestyle=":", label="mean hospital alone")
    if report.centralized:
        ax.axhline(report.centralized["accuracy"], color="black", label="centralized (union)")
    ax.set_xlabel("wall time after the hospitals started (s)")
    ax.set_ylabel("test accuracy")
    ax.set_xlim(left=0)
    settings = report.settings
    split = "IID" if settings.alpha is None else f"Dirichlet alpha={settings.alpha:g}"
    ax.set_title(
        f"MedVec demo: {settings.dataset}, {settings.arch}, {settings.hospitals} hospitals, "
        f"{split}",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
