"""RegistryClient: one typed method per endpoint of the registry's REST API (`/api/v1`).

The table in docs/architecture.md is the contract. Errors come back as
:class:`~hospital_cli.errors.ApiError` built from the body ``{"code", "message", "detail"}``.
Binary bodies are streamed from and to disk; nothing holds a whole model in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from hospital_cli.errors import ApiError

API = "/api/v1"
CHUNK = 1 << 20
Json = dict[str, Any]
OCTET = {"Content-Type": "application/octet-stream"}


def iter_file(
    stream: BinaryIO, length: int, on_bytes: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """Yield ``length`` bytes of ``stream`` from its current position, in chunks."""
    left = length
    while left > 0:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            raise OSError("file shrank while it was being sent")
        left -= len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
        yield chunk


def raise_for_api_error(response: httpx.Response) -> None:
    """Turn a 4xx/5xx into an ApiError carrying the registry's own message."""
    if response.is_success:
        return
    if response.is_stream_consumed is False:
        response.read()
    code, message, detail = f"http_{response.status_code}", response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or code)
        raw = body.get("message", body.get("detail"))
        message = raw if isinstance(raw, str) else (str(raw) if raw else message)
        detail = body.get("detail")
    raise ApiError(response.status_code, code, message or "error", detail)


class RegistryClient(httpx.Client):
    """An ``httpx.Client`` bound to one registry and one token."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(
            base_url=server.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    # -- plumbing ---------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, f"{API}{path}", **kwargs)
        raise_for_api_error(response)
        return response.json() if response.content else None

    def _list(self, path: str, **kwargs: Any) -> list[Json]:
        """A listing, whether the registry answers a bare list or ``{"items": [...]}``."""
        body = self._json("GET", path, **kwargs)
        if isinstance(body, dict):
            body = body.get("items", [])
        return list(body or [])

    def _send_file(self, path: str, file: Path, params: dict[str, Any]) -> Any:
        size = file.stat().st_size
        with file.open("rb") as stream:
            headers = {**OCTET, "Content-Length": str(size)}
            return self._json(
                "POST", path, params=params, content=iter_file(stream, size), headers=headers
            )

    def download(
        self,
        path: str,
        dest: BinaryIO,
        *,
        on_total: Callable[[int | None], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> str | None:
        """Stream a binary body into ``dest``; return the server's ``X-Content-SHA256``."""
        with self.stream("GET", f"{API}{path}") as response:
            raise_for_api_error(response)
            total = response.headers.get("Content-Length")
            if on_total is not None:
                on_total(int(total) if total else None)
            for chunk in response.iter_bytes(CHUNK):
                dest.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            return response.headers.get("X-Content-SHA256")

    # -- health and identity ---------------------------------------------
    def healthz(self) -> Json:
        response = self.get("/healthz")
        raise_for_api_error(response)
        return dict(response.json())

    def whoami(self) -> Json:
        return dict(self._json("GET", "/whoami"))

    # -- hospitals and tokens (admin) -------------------------------------
    def create_hospital(self, name: str) -> Json:
        return dict(self._json("POST", "/hospitals", json={"name": name}))

    def list_hospitals(self) -> list[Json]:
        return self._list("/hospitals")

    def remove_hospital(self, hospital_id: str, reason: str | None = None) -> Json:
        params = {"reason": reason} if reason else {}
        return dict(self._json("DELETE", f"/hospitals/{hospital_id}", params=params))

    def create_token(self, name: str, role: str, hospital_id: str | None = None) -> Json:
        body = {"name": name, "role": role, "hospital_id": hospital_id}
        return dict(self._json("POST", "/tokens", json=body))

    def list_tokens(self) -> list[Json]:
        return self._list("/tokens")

    def revoke_token(self, token_id: str) -> None:
        self._json("DELETE", f"/tokens/{token_id}")

    def privacy_ledger(self, hospital_id: str) -> Json:
        return dict(self._json("GET", f"/hospitals/{hospital_id}/privacy"))

    def set_privacy_budget(self, hospital_id: str, epsilon: float, delta: float) -> Json:
        body = {"epsilon": epsilon, "delta": delta}
        return dict(self._json("PUT", f"/hospitals/{hospital_id}/privacy-budget", json=body))

    def clear_privacy_budget(self, hospital_id: str) -> Json:
        return dict(self._json("DELETE", f"/hospitals/{hospital_id}/privacy-budget"))

    # -- bases and benchmarks ----------------------------------------------
    def register_base(self, name: str, file: Path) -> Json:
        return dict(self._send_file("/bases", file, {"name": name}))

    def list_bases(self) -> list[Json]:
        return self._list("/bases")

    def get_base(self, base_id: str = "current") -> Json:
        return dict(self._json("GET", f"/bases/{base_id}"))

    def register_benchmark(self, name: str, file: Path) -> Json:
        return dict(self._send_file("/benchmarks", file, {"name": name}))

    def list_benchmarks(self) -> list[Json]:
        return self._list("/benchmarks")

    # -- resumable uploads and vectors --------------------------------------
    def create_upload(self, sha256: str, size: int) -> Json:
        return dict(self._json("POST", "/uploads", json={"sha256": sha256, "size": size}))

    def put_upload_part(
        self,
        upload_id: str,
        offset: int,
        stream: BinaryIO,
        length: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Json:
        """Send ``length`` bytes of ``stream`` at ``offset`` (409 if the server is elsewhere)."""
        headers = {**OCTET, "Content-Length": str(length)}
        return dict(
            self._json(
                "PUT",
                f"/uploads/{upload_id}",
                params={"offset": offset},
                content=iter_file(stream, length, on_bytes),
                headers=headers,
            )
        )

    def get_upload(self, upload_id: str) -> Json:
        return dict(self._json("GET", f"/uploads/{upload_id}"))

    def complete_upload(self, upload_id: str) -> Json:
        return dict(self._json("POST", f"/uploads/{upload_id}/complete"))

    def push_vector(self, file: Path) -> Json:
        """One-shot upload of a whole vector file."""
        return dict(self._send_file("/vectors", file, {}))

    def list_vectors(
        self, *, base_id: str | None = None, status: str | None = None, latest: bool | None = None
    ) -> list[Json]:
        params = {"base_id": base_id, "status": status, "latest": latest}
        return self._list("/vectors", params={k: v for k, v in params.items() if v is not None})

    def get_vector(self, vector_id: str) -> Json:
        return dict(self._json("GET", f"/vectors/{vector_id}"))

    # -- quarantine (admin) ----------------------------------------------------
    def list_quarantined(self, base_id: str | None = None) -> list[Json]:
        return self._list("/quarantine", params={"base_id": base_id} if base_id else {})

    def release_vector(self, vector_id: str, note: str | None = None) -> Json:
        return dict(self._json("POST", f"/quarantine/{vector_id}/release", json={"note": note}))

    def reject_vector(self, vector_id: str, reason: str) -> Json:
        body = {"reason": reason}
        return dict(self._json("POST", f"/quarantine/{vector_id}/reject", json=body))

    # -- versions, merges, evaluations ---------------------------------------
    def list_versions(self, status: str | None = None) -> list[Json]:
        params = {"status": status} if status else {}
        return self._list("/versions", params=params)

    def get_version(self, version_id: str) -> Json:
        return dict(self._json("GET", f"/versions/{version_id}"))

    def model_card(self, version_id: str) -> str:
        """The version's model card (Markdown)."""
        response = self.get(f"{API}/versions/{version_id}/card")
        raise_for_api_error(response)
        return response.text

    def promote(self, version_id: str, stage: str, *, force: bool = False) -> Json:
        body = {"stage": stage, "force": force}
        return dict(self._json("POST", f"/versions/{version_id}/promote", json=body))

    def rollback(self) -> Json:
        return dict(self._json("POST", "/versions/rollback"))

    def start_generation(self, version_id: str) -> Json:
        return dict(self._json("POST", f"/versions/{version_id}/generation"))

    def version_evaluations(self, version_id: str) -> list[Json]:
        return self._list(f"/versions/{version_id}/evaluations")

    def request_evaluation(self, version_id: str, benchmark_id: str, split: str = "test") -> Json:
        body = {"benchmark_id": benchmark_id, "split": split}
        return dict(self._json("POST", f"/versions/{version_id}/evaluations", json=body))

    def request_contributions(self, version_id: str) -> Json:
        return dict(self._json("POST", f"/versions/{version_id}/contributions"))

    def contributions(self, version_id: str) -> Json:
        return dict(self._json("GET", f"/versions/{version_id}/contributions"))

    def request_merge(
        self,
        base_id: str,
        strategy: str,
        *,
        params: Json | None = None,
        selection: Json | None = None,
        benchmark_id: str | None = None,
        calibration: str = "auto",
    ) -> Json:
        body = {
            "base_id": base_id,
            "strategy": strategy,
            "params": params or {},
            "selection": selection or {},
            "benchmark_id": benchmark_id,
            "calibration": calibration,
        }
        return dict(self._json("POST", "/merges", json=body))

    def get_merge(self, job_id: str) -> Json:
        return dict(self._json("GET", f"/merges/{job_id}"))

    def list_merges(self) -> list[Json]:
        return self._list("/merges")

    def leaderboard(self, metric: str = "accuracy", benchmark_id: str | None = None) -> list[Json]:
        params = {"metric": metric, **({"benchmark_id": benchmark_id} if benchmark_id else {})}
        return self._list("/leaderboard", params=params)

    def audit(self, *, action: str | None = None, limit: int = 100) -> list[Json]:
        params: dict[str, Any] = {"limit": limit, **({"action": action} if action else {})}
        return self._list("/audit", params=params)
