"""``docker-compose.yml`` read as compose reads it: the file is interpolated whole before
profiles are applied, so a required variable (``${VAR:?}``) in a profiled service stops
everyone's ``docker compose up``; every ``MEDVEC_*`` name it sets is a real setting; every
Celery app it runs exists; a merge worker serves the queue the registry routes to.

No container runs here (no image registry is reachable); this checks the file itself.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

from aggregator.config import AggregatorSettings
from worker.config import WorkerSettings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
REQUIRED = re.compile(r"\$\{(\w+):\?")


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _setting_names() -> set[str]:
    names = {f"MEDVEC_{name.upper()}" for name in WorkerSettings.model_fields}
    names |= {f"MEDVEC_AGG_{name.upper()}" for name in AggregatorSettings.model_fields}
    return names


def _required(services: dict[str, Any]) -> set[str]:
    return set(REQUIRED.findall(yaml.safe_dump(services)))


def test_only_the_default_services_require_variables() -> None:
    services = _services()
    default = {n: s for n, s in services.items() if not s.get("profiles")}
    profiled = {n: s for n, s in services.items() if s.get("profiles")}
    extra = _required(profiled) - _required(default)
    assert not extra, (
        f"profiled services require {sorted(extra)}: compose would refuse a plain "
        "`docker compose up` without them"
    )


def test_every_medvec_variable_is_a_setting() -> None:
    known = _setting_names()
    for name, service in _services().items():
        unknown = {k for k in service.get("environment", {}) if k.startswith("MEDVEC_")} - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which no settings class reads"


def test_every_celery_app_exists() -> None:
    for name, service in _services().items():
        command = service.get("command") or []
        if command[:1] == ["celery"]:
            module = command[command.index("-A") + 1]
            assert importlib.util.find_spec(module), f"{name} runs a missing app {module}"


def test_the_merge_worker_serves_the_merge_queue_and_loads_no_torch_app() -> None:
    services = _services()
    merge = services["merge-worker"]["command"]
    assert merge[merge.index("-A") + 1] == "worker.merge_main"
    assert merge[merge.index("-Q") + 1] == "${MEDVEC_MERGE_QUEUE:-medvec-merge}"
    # the registry and every worker route merges by the same setting
    assert services["api"]["environment"]["MEDVEC_MERGE_QUEUE"] == "${MEDVEC_MERGE_QUEUE:-}"
