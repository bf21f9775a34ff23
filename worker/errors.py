"""Which failures are worth retrying (the world was briefly unavailable) and which are final."""

from __future__ import annotations

from botocore.exceptions import ConnectionError as S3ConnectionError
from botocore.exceptions import HTTPClientError as S3HTTPClientError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError


class JobGone(Exception):
    """The job or version a task names is not in the database (deleted, or another registry)."""


class TerminalJobError(Exception):
    """The job cannot succeed as asked; retrying would fail the same way."""


class HolderUnavailable(Exception):
    """The share holder is down, hung or failing (5xx): the secure merge waits for it,
    asked again with growing delays for as long as it takes, holding no worker meanwhile
    (``worker.runner.wait_for_holder``). Its message names the share holder."""


#: transient: the database, the broker, S3 or the network was briefly unavailable
RETRIABLE: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    RedisConnectionError,
    RedisTimeoutError,
    S3ConnectionError,
    S3HTTPClientError,
    ConnectionError,
    TimeoutError,
)


def is_retriable(exc: BaseException) -> bool:
    return isinstance(exc, RETRIABLE)


def describe(exc: BaseException) -> str:
    """One line for ``MergeJob.error``: the exception's class and message (and hint)."""
    hint = getattr(exc, "hint", None)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} — {hint}" if hint else text
