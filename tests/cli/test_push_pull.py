"""base pull / push / status against the live registry, with sha256 checks and resumes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import torch

from hospital_cli.client import RegistryClient
from hospital_cli.uploads import ResumeStore, Uploader
from medvec.hashing import sha256_file
from medvec.models import load_model_file
from medvec.vectors import VectorMetadata, save_vector
from tests.cli.conftest import Hospital, Registry, assert_one_line_error, login


def make_vector(
    path: Path,
    base: dict[str, Any],
    hospital: str,
    *,
    scale: float = 0.01,
    seed: int = 0,
    base_id: str | None = None,
) -> Path:
    """A random data vector for ``base`` with full metadata (what `medvec train` writes)."""
    model, spec = load_model_file(base["path"])
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        k: torch.randn(v.shape, generator=generator) * scale
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }
    metadata = VectorMetadata(
        base_id=base_id or str(base["id"]),
        base_sha256=str(base["sha256"]),
        hospital=hospital,
        num_samples=10,
        label_histogram={"0": 4, "1": 6},
        training={"epochs": 1},
        privacy={},
        spec=spec,
    )
    save_vector(path, tensors, metadata)
    return path


def test_base_pull_verifies_and_caches(
    cli: Any, registry: Registry, hospital: Hospital, base_record: dict[str, Any], tmp_path: Path
) -> None:
    login(cli, registry, hospital.token)
    first = cli("base", "pull", "--json", "--id", str(base_record["id"]))
    assert first.exit_code == 0, first.stderr
    body = first.json()
    assert body["cached"] is False
    cached = Path(body["path"])
    assert cached.name == f"{base_record['sha256']}.safetensors"
    assert sha256_file(cached) == base_record["sha256"]

    again = cli("base", "pull", "--json", "--id", str(base_record["id"]), "-o", tmp_path / "b.st")
    assert again.json()["cached"] is True
    assert sha256_file(tmp_path / "b.st") == base_record["sha256"]

    # a corrupted cache entry is detected by its sha256 and downloaded again
    cached.write_bytes(b"corrupt")
    repaired = cli("base", "pull", "--json", "--id", str(base_record["id"]))
    assert repaired.json()["cached"] is False
    assert sha256_file(cached) == base_record["sha256"]
    assert not list(cached.parent.glob("*.partial"))

    listed = cli("base", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert str(base_record["id"]) in {str(row["id"]) for row in listed.json()}


def test_push_round_trip_is_idempotent_and_listed(
    cli: Any, registry: Registry, hospital: Hospital, base_record: dict[str, Any], tmp_path: Path
) -> None:
    login(cli, registry, hospital.token)
    vector = make_vector(tmp_path / "v.safetensors", base_record, hospital.name)
    size = vector.stat().st_size
    pushed = cli("push", vector, "--json", "--part-size", "4096")
    assert pushed.exit_code == 0, pushed.stderr
    first = pushed.json()
    assert first["sha256"] == first["vector"]["sha256"] == sha256_file(vector)
    assert first["bytes_sent"] == size
    assert registry.bytes_received(first["upload_id"]) == size

    again = cli("push", vector, "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["vector"]["id"] == first["vector"]["id"]
    assert again.json()["bytes_sent"] == 0 and again.json()["already_known"] is True

    status = cli("status", "--json")
    assert status.exit_code == 0, status.stderr
    ids = [v["id"] for v in status.json()["vectors"]]
    assert ids.count(first["vector"]["id"]) == 1

    # the registry holds exactly our bytes (admins may download any vector)
    with registry.admin() as admin, (tmp_path / "back.safetensors").open("wb") as dest:
        header = admin.download(f"/vectors/{first['vector']['id']}/download", dest)
    assert header == sha256_file(tmp_path / "back.safetensors") == first["sha256"]


def test_interrupted_push_resumes_without_resending(
    cli: Any, registry: Registry, hospital: Hospital, base_record: dict[str, Any], tmp_path: Path
) -> None:
    vector = make_vector(tmp_path / "v.safetensors", base_record, hospital.name, seed=1)
    size, sha = vector.stat().st_size, sha256_file(vector)
    half = size // 2
    with RegistryClient(registry.url, hospital.token) as client, vector.open("rb") as stream:
        session = client.create_upload(sha, size)
        client.put_upload_part(str(session["id"]), 0, stream, half)  # then the "crash"
        assert client.get_upload(str(session["id"]))["offset"] == half
    login(cli, registry, hospital.token)
    resumed = cli("push", vector, "--json", "--part-size", "4096")
    assert resumed.exit_code == 0, resumed.stderr
    body = resumed.json()
    assert body["upload_id"] == session["id"]
    assert body["resumed_from"] == half
    assert body["bytes_sent"] == size - half
    assert body["vector"]["sha256"] == sha
    # server side: every byte arrived exactly once
    assert registry.bytes_received(str(session["id"])) == size


class _CutStream(httpx.SyncByteStream):
    """Yields ``limit`` bytes of a request body, then drops the connection."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) > self.limit:
                yield chunk[: self.limit - sent]
                raise httpx.WriteError("connection reset after a partial part (injected)")
            sent += len(chunk)
            yield chunk


class DropMidPartTransport(httpx.HTTPTransport):
    """Cuts the second part upload after ``limit`` bytes, once."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.puts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.puts += 1
            if self.puts == 2:
                request.stream = _CutStream(request.stream, self.limit)  # type: ignore[arg-type]
        return super().handle_request(request)


def test_push_survives_a_connection_drop_mid_part(
    registry: Registry, hospital: Hospital, base_record: dict[str, Any], tmp_path: Path
) -> None:
    vector = make_vector(tmp_path / "v.safetensors", base_record, hospital.name, seed=2)
    size, part = vector.stat().st_size, 4096
    transport = DropMidPartTransport(limit=1500)
    with RegistryClient(registry.url, hospital.token, transport=transport) as client:
        uploader = Uploader(client, ResumeStore(tmp_path / "state"), part_size=part, backoff=0)
        result = uploader.push(vector)
    assert transport.puts > size // part  # the cut part was sent again
    assert result.vector["sha256"] == sha256_file(vector)
    assert size <= registry.bytes_received(str(result.upload_id)) <= size + part
    assert not list((tmp_path / "state").glob("*.json"))  # resume state dropped when done


def test_rejected_vector_is_one_line(
    cli: Any, registry: Registry, hospital: Hospital, base_record: dict[str, Any], tmp_path: Path
) -> None:
    login(cli, registry, hospital.token)
    vector = make_vector(tmp_path / "v.safetensors", base_record, hospital.name, scale=float("nan"))
    result = cli("push", vector)
    assert_one_line_error(result, 6, "rejected")
    truncated = tmp_path / "cut.safetensors"
    good = make_vector(tmp_path / "good.safetensors", base_record, hospital.name, seed=9)
    truncated.write_bytes(good.read_bytes()[:-100])
    assert_one_line_error(cli("push", truncated), 6, "rejected")
    as_json = cli("push", vector, "--json")
    assert as_json.exit_code == 6 and as_json.json()["status"] == "rejected"
    status = cli("status", "--json").json()
    assert all(
        v["sha256"] != sha256_file(vector) or v["status"] == "rejected" for v in status["vectors"]
    )


def test_vector_for_an_unknown_base_is_refused(
    cli: Any, registry: Registry, hospital: Hospital, base_record: dict[str, Any], tmp_path: Path
) -> None:
    login(cli, registry, hospital.token)
    vector = make_vector(
        tmp_path / "v.safetensors", base_record, hospital.name, base_id="no-such-base"
    )
    result = cli("push", vector)
    assert result.exit_code != 0
    assert_one_line_error(result, result.exit_code)


def test_missing_file_is_one_line(cli: Any, registry: Registry, hospital: Hospital) -> None:
    login(cli, registry, hospital.token)
    result = cli("push", "/nonexistent/vector.safetensors")
    assert result.exit_code == 2  # usage error from the argument check
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr
