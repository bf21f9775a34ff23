"""The asynchronous simulation's figure: production's test accuracy of every strategy over
virtual time and over the images trained, with the time-to-target line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: synchronous baselines dashed, asynchronous ones solid
STYLES = {"sync": "--", "sync_deadline": "--", "fedasync": "-", "fedbuff": "-", "medvec": "-"}


def plot_async(result: dict[str, Any], path: Path, target: float | None = None) -> Path:
    """Write the figure of ``result`` (``AsyncResult.to_json()``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_time, by_compute) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    for name, run in result["runs"].items():
        curve = run["curve"]
        style = STYLES.get(run["kind"], "-")
        width = 2.2 if run["kind"] == "medvec" else 1.3
        times = [max(p["time"], 1e-3) for p in curve]
        accuracy = [p["accuracy"] for p in curve]
        by_time.step(times, accuracy, where="post", linestyle=style, linewidth=width, label=name)
        compute = [p["compute"] for p in curve]
        by_compute.step(compute, accuracy, where="post", linestyle=style, linewidth=width)
    for ax in (by_time, by_compute):
        if target is not None:
            ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylabel("test accuracy of the production model")
        ax.grid(alpha=0.3)
    by_time.set_xscale("log")
    by_time.set_xlabel("virtual time (s, log scale)")
    by_compute.set_xlabel("images trained by all hospitals")
    config = result["config"]
    split = "IID" if config["partition"] == "iid" else f"Dirichlet({config['alpha']:g})"
    fig.suptitle(
        f"{config['dataset']}, {result['arch']}, {config['hospitals']} hospitals, {split}, "
        f"seed {config['seed']}" + ("" if target is None else f"; dotted: target {target:.3f}")
    )
    by_time.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
