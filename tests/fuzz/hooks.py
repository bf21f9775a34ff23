"""Schemathesis hooks for tests/fuzz/test_openapi.py (loaded by the ``schemathesis`` process
through ``SCHEMATHESIS_HOOKS``).

The members of a sum the share holder is asked for are a JSON object's keys (pair ids),
which no parameter dictionary reaches: this names real pair ids instead of the generated
ones, so that the sums the fuzzer asks for reach the set-size and differencing checks.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

#: the pair ids of the shares B the share holder holds, comma-separated
PAIR_IDS_ENV = "MEDVEC_FUZZ_PAIR_IDS"
SUMS = "POST /api/v1/sums"


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    """Rename the first members of a sum request to the real pair ids, in order."""
    pairs = [p for p in os.environ.get(PAIR_IDS_ENV, "").split(",") if p]
    operation = context.operation
    if operation is None or operation.label != SUMS or not isinstance(body, dict):
        return body
    members = body.get("members")
    if isinstance(members, dict):
        keys = [*pairs[: len(members)], *list(members)[len(pairs) :]]
        body["members"] = dict(zip(keys, members.values(), strict=True))
    elif isinstance(members, list):  # a set of pair ids
        body["members"] = [*pairs[: len(members)], *members[len(pairs) :]]
    return body
