"""What a run of the asynchronous simulation shows: time to target, final accuracy, and how
the straggler, the late joiner and the offline hospital were treated.

Everything reads the JSON record (``AsyncResult.to_json``), so a committed result can
be summarised again without rerunning it. The target is synchronous FedAvg's final
accuracy minus ``margin`` (1 point), on the test split for the report and on the
validation split for choosing a policy.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SUMMARY_COLUMNS",
    "hospital_checks",
    "summarize",
    "time_to",
]

SUMMARY_COLUMNS = [
    "strategy",
    "time_to_target",
    "speedup",
    "final_accuracy",
    "final_val_accuracy",
    "val_time_to_target",
    "compute",
    "end_time",
    "versions",
    "promoted",
    "unmerged_share",
    "straggler_merged",
    "late_joiner_lag",
    "versions_while_offline",
    "idle_share",
]


def time_to(run: dict[str, Any], target: float, metric: str = "accuracy") -> float | None:
    """The first virtual time production's ``metric`` reached ``target`` (None: never)."""
    for point in run["curve"]:
        if point[metric] >= target - 1e-12:
            return float(point["time"])
    return None


def _role(run: dict[str, Any], role: str) -> dict[str, Any] | None:
    return next((h for h in run["hospitals"] if role in h["roles"]), None)


def _merged_jobs(run: dict[str, Any]) -> set[int]:
    """Jobs whose work is in a version: its inputs, and every job an input continues
    (transitively: a continuing job's vector holds the work of the job it continues)."""
    merged = {i["job"] for v in run["versions"] for i in v["inputs"]}
    continued = {job: earlier for h in run["hospitals"] for job, earlier in h.get("continued", [])}
    for job in sorted(continued, reverse=True):  # a chain runs to ever larger job ids
        if job in merged:
            merged.add(continued[job])
    return merged


def _holders(run: dict[str, Any], job: int) -> set[int]:
    """``job`` and the jobs that continue it, whose vectors hold its work."""
    continuing = {
        earlier: later for h in run["hospitals"] for later, earlier in h.get("continued", [])
    }
    holders = {job}
    while job in continuing:
        job = continuing[job]
        holders.add(job)
    return holders


def hospital_checks(run: dict[str, Any], offline: tuple[float, float] | None) -> dict[str, Any]:
    """The issue's hospital behaviour, measured:

    * ``unmerged_share``: share of all vectors whose work is in no version (dropped,
      excluded, or replaced by their hospital's next one before a merge took them; a
      vector continued by an input counts as merged);
    * ``straggler_merged``: share of the straggler's vectors that are inputs of a version;
    * ``late_joiner_lag``: how many versions were made after the late joiner's first
      vector arrived before one took it in (0: the first merge after its push; None:
      never);
    * ``versions_while_offline``: versions made while the offline hospital was away (a
      server that waits for it makes none).
    """
    merged = _merged_jobs(run)
    arrived = [a[0] for h in run["hospitals"] for a in h["arrivals"]]
    out: dict[str, Any] = {
        "unmerged_share": sum(job not in merged for job in arrived) / max(1, len(arrived)),
        "straggler_merged": None,
        "late_joiner_lag": None,
        "versions_while_offline": None,
    }
    straggler = _role(run, "straggler")
    if straggler is not None and straggler["arrivals"]:
        jobs = [a[0] for a in straggler["arrivals"]]
        out["straggler_merged"] = sum(job in merged for job in jobs) / len(jobs)
    joiner = _role(run, "late joiner")
    if joiner is not None and joiner["arrivals"]:
        first, pushed = joiner["arrivals"][0][:2]
        later = [v for v in run["versions"] if v["time"] >= pushed]
        holders = _holders(run, first)
        out["late_joiner_lag"] = next(
            (n for n, v in enumerate(later) if any(i["job"] in holders for i in v["inputs"])),
            None,
        )
    if offline is not None:
        start, end = offline
        out["versions_while_offline"] = sum(start <= v["time"] < end for v in run["versions"])
    return out


def _offline_window(result: dict[str, Any]) -> tuple[float, float] | None:
    away = next((h for h in result["hospitals"] if "offline" in h["roles"]), None)
    return tuple(away["offline"][0]) if away and away["offline"] else None


def _idle_share(run: dict[str, Any]) -> float:
    busy = sum(h["busy_s"] for h in run["hospitals"])
    idle = sum(h["idle_s"] for h in run["hospitals"])
    return idle / (busy + idle) if busy + idle else 0.0


def summarize(result: dict[str, Any], margin: float = 0.01) -> list[dict[str, Any]]:
    """One row per strategy: time to the target (virtual seconds; speedup: synchronous
    FedAvg's time over this one's), final test and validation accuracy, compute, and the
    hospital checks. Without a ``sync`` run there is no target."""
    runs = result["runs"]
    sync = runs.get("sync")
    target = sync["curve"][-1]["accuracy"] - margin if sync else None
    val_target = sync["curve"][-1]["val_accuracy"] - margin if sync else None
    sync_time = time_to(sync, target) if sync and target is not None else None
    offline = _offline_window(result)
    rows = []
    for name, run in runs.items():
        reached = time_to(run, target) if target is not None else None
        row: dict[str, Any] = {
            "strategy": name,
            "kind": run["kind"],
            "target": target,
            "time_to_target": reached,
            "speedup": sync_time / reached if sync_time and reached else None,
            "final_accuracy": run["curve"][-1]["accuracy"],
            "final_val_accuracy": run["curve"][-1]["val_accuracy"],
            "val_time_to_target": time_to(run, val_target, "val_accuracy")
            if val_target is not None
            else None,
            "compute": run["compute"],
            "end_time": run["end_time"],
            "versions": len(run["versions"]),
            "promoted": sum(bool(v.get("promoted", True)) for v in run["versions"]),
            "idle_share": _idle_share(run),
            **hospital_checks(run, offline),
        }
        rows.append(row)
    return rows
