"""The two worlds the fault suite kills processes in.

``embedded``: ``medvec-server serve --worker`` on the embedded default (SQLite, local
blobs, the Celery worker in the API's own process, in-memory broker).

``distributed``: PostgreSQL (a fresh database), a Redis server the suite starts on its
own port, ``medvec-server serve --no-worker``, a ``celery worker`` process, ``celery
beat`` (the sweeper's clock: every 2 s, re-sending jobs queued for 3 s) and a share holder
(``medvec-aggregator serve``, its own SQLite) for secure merges. A secure merge waits for
an unreachable share holder from 0.5 s, doubling, up to 2 s between tries, and gives up on
one that does not answer for 5 s (its sums here take well under a second).

Both run merges with ``MEDVEC_MERGE_TENSOR_DELAY_S`` (test-only: a pause after each
merged tensor, documented in docs/workers.md) so that a merge lasts long enough to be
killed while ``running``. The distributed world's visibility timeout is 60 s (task time
limits 55 s), so Redis hands a killed worker's unacknowledged task to the restarted
worker about a minute after it was first delivered.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.db import make_engine
from medvec.tokens import mint_token
from tests.faults.world import Fleet
from tests.integration.services import fresh_postgres_database
from tests.servers import (
    BeatProcess,
    RedisServer,
    ServerProcess,
    ShareHolderProcess,
    WorkerProcess,
    registry_env,
)

MERGE_TENSOR_DELAY_S = "0.05"
#: the fleets' vectors are seeded noise or a few steps from a random base: screening would
#: quarantine them (it is tested on real hospitals in tests/e2e/test_screening.py)
NO_SCREENING = "false"


@pytest.fixture(scope="package")
def embedded(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("faults-embedded")
    admin = mint_token()
    env = registry_env(
        folder / "data",
        admin,
        merge_tensor_delay_s=MERGE_TENSOR_DELAY_S,
        screening_enabled=NO_SCREENING,
    )
    server = ServerProcess(env, folder, worker=True)
    server.start()
    engine = make_engine(Settings(data_dir=folder / "data").resolved_database_url)
    try:
        fleet = Fleet(server, engine, admin, folder)
        fleet.setup(datasets_dir)
        yield fleet
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture(scope="package")
def distributed(
    tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path
) -> Iterator[tuple[Fleet, WorkerProcess, RedisServer]]:
    folder = tmp_path_factory.mktemp("faults-distributed")
    admin = mint_token()
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database())
        redis_server = RedisServer(folder)
        stack.callback(redis_server.stop)
        redis_server.start()
        holder = ShareHolderProcess(folder / "holder", folder, database_url=None)
        stack.callback(holder.stop)
        holder.start()
        queue = f"medvec-faults-{secrets.token_hex(4)}"
        limits = {
            f"{kind}_{which}time_limit_s": value
            for kind in ("merge", "eval", "tune")
            for which, value in (("", "55"), ("soft_", "50"))
        }
        env = registry_env(
            folder / "data",
            admin,
            database_url=database_url,
            redis_url=redis_server.url,
            screening_enabled=NO_SCREENING,
            queue=queue,
            auto_migrate="true",
            merge_tensor_delay_s=MERGE_TENSOR_DELAY_S,
            visibility_timeout_s="60",
            # an evaluation whose worker was killed is re-sent once its lease runs out;
            # the lease must outlast the evaluation time limit (55 s), and ending before
            # the visibility timeout (60 s) lets the task Redis redelivers take it at once
            eval_lease_s="58",
            retry_backoff_s="1",
            share_holder_url=holder.url,
            share_holder_token=holder.mint("registry", "registry"),
            secure_min_set_size="3",
            share_holder_retry_s="0.5",
            share_holder_retry_max_s="2",
            share_holder_timeout_s="5",
            sweep_interval_s="2",
            stale_queued_s="3",
            **limits,
        )
        server = ServerProcess(env, folder, worker=False)
        stack.callback(server.stop)
        server.start()  # migrates the fresh database before the worker reads it
        worker = WorkerProcess(env, folder, queue)
        stack.callback(worker.stop)
        worker.start()
        beat = BeatProcess(env, folder)
        stack.callback(beat.stop)
        beat.start()
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        fleet = Fleet(server, engine, admin, folder, holder=holder)
        fleet.setup(datasets_dir)
        yield fleet, worker, redis_server


@pytest.fixture(params=["embedded", "distributed"])
def fleet(request: pytest.FixtureRequest) -> Fleet:
    """Each world in turn, for the faults of the API process itself."""
    if request.param == "embedded":
        world: Fleet = request.getfixturevalue("embedded")
        return world
    distributed_fleet, _worker, _redis = request.getfixturevalue("distributed")
    return distributed_fleet
