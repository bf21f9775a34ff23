"""The demo's figure: test accuracy of every merged version, generation by generation,
against the mean local model of each generation, the mean hospital trained alone and
the centralized model."""

from __future__ import annotations

from pathlib import Path

from hospital_cli.demo.state import DemoReport

MARKERS = {"weighted_mean": "o", "task_arithmetic": "s", "ties": "^", "median": "D"}


def plot_report(report: DemoReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    versions = [v for v in report.versions if v.metrics]
    x_of: dict[str, int] = {}
    for index, version in enumerate(versions):
        x_of[version.version_id] = index
    strategies = sorted({v.strategy for v in versions})
    for strategy in strategies:
        points = [
            (x_of[v.version_id], v.metrics["accuracy"]) for v in versions if v.strategy == strategy
        ]
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, marker=MARKERS.get(strategy, "x"), s=45, label=f"merged: {strategy}")
    promoted = [v for v in versions if v.version_id in report.promoted]
    if promoted:
        ax.scatter(
            [x_of[v.version_id] for v in promoted],
            [v.metrics["accuracy"] for v in promoted],
            s=160, facecolors="none", edgecolors="green", linewidths=2, label="promoted",
        )  # fmt: skip
    for generation in sorted({v.generation for v in versions}):
        xs = [x_of[v.version_id] for v in versions if v.generation == generation]
        local = [
            r.metrics["accuracy"] for r in report.locals if r.generation == generation and r.metrics
        ]
        if local:
            mean = sum(local) / len(local)
            ax.hlines(mean, min(xs) - 0.4, max(xs) + 0.4, colors="grey", linestyles="--")
            ax.text(min(xs) - 0.4, mean, f"mean local g{generation}", fontsize=7, va="bottom")
        ax.axvline(max(xs) + 0.5, color="lightgrey", linewidth=0.8)
        ax.text((min(xs) + max(xs)) / 2, 0.02, f"generation {generation}", ha="center",
                va="bottom", fontsize=8, transform=ax.get_xaxis_transform())  # fmt: skip
    if report.alone:
        alone = sum(m["accuracy"] for m in report.alone.values()) / len(report.alone)
        ax.axhline(alone, color="firebrick", linestyle=":", label="mean hospital alone")
    if report.centralized:
        ax.axhline(report.centralized["accuracy"], color="black", label="centralized (union)")
    ax.set_xlabel("model version (in order of creation)")
    ax.set_ylabel("test accuracy")
    settings = report.settings
    split = "IID" if settings.alpha is None else f"Dirichlet alpha={settings.alpha:g}"
    ax.set_title(
        f"MedVec demo: {settings.dataset}, {settings.arch}, {settings.hospitals} hospitals, {split}"
    )
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
