"""The local base cache: bases by sha256, plus a small index of registry records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hospital_cli import output
from hospital_cli.client import RegistryClient
from hospital_cli.config import cache_dir
from hospital_cli.downloads import cached_or_download
from hospital_cli.errors import CliError

INDEX = "index.json"


def base_cache() -> Path:
    return cache_dir() / "bases"


def pretrained_cache() -> Path:
    """Where pretrained bases are kept: made once per machine, shared by every command."""
    return cache_dir() / "pretrained"


def _write_index(cache: Path, record: dict[str, Any]) -> None:
    index = read_index(cache)
    index[str(record["sha256"])] = record
    index["current"] = record
    tmp = cache / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=2, default=str))
    os.replace(tmp, cache / INDEX)


def read_index(cache: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((cache / INDEX).read_text()))
    except (OSError, ValueError):
        return {}


def pull_base(
    client: RegistryClient, base_id: str, *, cache: Path
) -> tuple[dict[str, Any], Path, bool]:
    """Fetch a base record and its verified file; returns (record, path, was_cached)."""
    record = client.get_base(base_id)
    sha = str(record.get("sha256", ""))
    if len(sha) != 64:
        raise CliError(f"the registry's base record has no valid sha256: {record}")
    with output.progress_bytes(transient=True) as bar:
        task = bar.add_task(f"base {record.get('name', '')}", total=None)
        path, cached = cached_or_download(
            client,
            f"/bases/{record['id']}/download",
            cache,
            sha,
            on_total=lambda total: bar.update(task, total=total),
            on_bytes=lambda n: bar.advance(task, n),
        )
    _write_index(cache, record)
    return record, path, cached


def local_base(base: Path | None) -> tuple[Path, dict[str, Any]]:
    """The base to train against: an explicit file, else the last pulled one."""
    cache = base_cache()
    index = read_index(cache)
    if base is not None:
        from medvec.hashing import sha256_file

        sha = sha256_file(base)
        record = index.get(sha) or {"id": sha, "sha256": sha, "name": base.stem}
        return base, record
    record = index.get("current")
    if not record:
        raise CliError("no base model cached", hint="run `medvec base pull` first or pass --base")
    path = cache / f"{record['sha256']}.safetensors"
    if not path.is_file():
        raise CliError(f"cached base {path} is missing", hint="run `medvec base pull` again")
    return path, dict(record)
