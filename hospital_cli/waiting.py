"""Polling a registry record until a worker has decided on it (a vector, a base)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

Record = dict[str, Any]


def await_status(
    record: Record, fetch: Callable[[], Record], pending: Collection[str], wait: float
) -> Record:
    """``record`` refreshed with ``fetch`` (backing off) while its status is in ``pending``,
    for at most ``wait`` seconds; the last record seen."""
    deadline = time.monotonic() + wait
    delay = 0.5
    while str(record.get("status")) in pending and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
        record = fetch()
    return record
