"""Real services for the integration tests: a fresh PostgreSQL database and a Redis
database index (the processes that use them are in :mod:`tests.servers`).

Everything is named at random per test session, because other test sessions share
the same PostgreSQL and Redis servers.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis

PG_ADMIN = os.environ.get("MEDVEC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("MEDVEC_TEST_REDIS", "redis://127.0.0.1:6379")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database; its SQLAlchemy URL. Dropped afterwards."""
    name = f"medvec_it_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    server = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


#: claims live in database 0, which no test uses: ``SET NX`` makes the claim atomic, so
#: parallel test processes (pytest-xdist workers, other sessions) never share an index
CLAIM_KEY = "medvec-tests:claimed-db:{index}"
CLAIM_TTL_S = 6 * 3600  # a crashed session's claim lapses


@contextmanager
def fresh_redis_database() -> Iterator[str]:
    """An empty Redis database index (one of 1..15) claimed for this block; its URL.
    Flushed and released afterwards."""
    admin = redis.Redis.from_url(f"{REDIS_HOST}/0")
    token = secrets.token_hex(8)
    for _ in range(60):
        index = 1 + secrets.randbelow(15)
        claim = CLAIM_KEY.format(index=index)
        if not admin.set(claim, token, nx=True, ex=CLAIM_TTL_S):
            continue
        client = redis.Redis.from_url(f"{REDIS_HOST}/{index}")
        if client.dbsize() == 0:
            break
        client.close()
        admin.delete(claim)  # left over by a process that did not flush it: not ours
    else:
        admin.close()
        raise RuntimeError("no empty Redis database index could be claimed")
    try:
        yield f"{REDIS_HOST}/{index}"
    finally:
        client.flushdb()
        client.close()
        if admin.get(claim) == token.encode():
            admin.delete(claim)
        admin.close()
