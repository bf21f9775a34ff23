"""Every failure is one clear ``Error:`` line on stderr and a non-zero exit code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from hospital_cli.client import RegistryClient
from hospital_cli.downloads import download_verified
from hospital_cli.errors import CliError
from tests.cli.conftest import (
    CliResult,
    Hospital,
    Registry,
    assert_one_line_error,
    free_port,
    login,
)

Cli = Callable[..., CliResult]


def test_usage_errors_are_one_line(cli: Cli) -> None:
    assert_one_line_error(cli("push", "--bogus"), 2, "--bogus", "medvec push --help")
    missing = cli("push", "/nonexistent/vector.safetensors")
    assert_one_line_error(missing, 2, "does not exist")
    assert_one_line_error(cli("train", "--data", "x.npz", "--epochs", "0"), 2, "--epochs")


def test_not_logged_in(cli: Cli, tmp_path: Path) -> None:
    vector = tmp_path / "v.safetensors"
    vector.write_bytes(b"\0" * 16)
    assert_one_line_error(cli("push", vector), 4, "medvec login")
    assert_one_line_error(cli("status"), 4, "medvec login")
    assert_one_line_error(cli("base", "pull"), 4, "medvec login")


def test_unreachable_registry(cli: Cli, tmp_path: Path) -> None:
    vector = tmp_path / "v.safetensors"
    vector.write_bytes(b"\0" * 16)
    url = f"http://127.0.0.1:{free_port()}"
    creds = ["--server", url, "--token", "mv_x"]
    assert_one_line_error(cli("push", vector, *creds, "--retries", "0"), 3, "cannot reach")
    assert_one_line_error(cli("pull", *creds), 3, "cannot reach")
    assert_one_line_error(cli("admin", "versions", *creds), 3, "cannot reach")


def test_hospital_token_on_admin_commands(cli: Cli, registry: Registry, hospital: Hospital) -> None:
    login(cli, registry, hospital.token)
    assert_one_line_error(cli("admin", "hospitals", "create", "rogue"), 4)
    assert_one_line_error(cli("admin", "versions"), 4)


def test_not_found_on_the_registry(
    cli: Cli, registry: Registry, hospital: Hospital, base_record: dict[str, Any]
) -> None:
    login(cli, registry, hospital.token)
    assert_one_line_error(cli("base", "pull", "--id", "no-such-base"), 5)


def test_train_without_a_base_or_data(cli: Cli, tmp_path: Path, datasets_dir: Path) -> None:
    data = datasets_dir / "pneumoniamnist.npz"
    no_base = cli("train", "--data", data, "--hospital", "h", "-o", tmp_path / "v.safetensors")
    assert_one_line_error(no_base, 1, "medvec base pull")
    no_data = cli("train", "--data", tmp_path / "nothing.npz", "--hospital", "h")
    assert_one_line_error(no_data, 1, "nothing.npz")
    bad_meta = cli("train", "--data", data, "--meta", "novalue", "--hospital", "h")
    assert_one_line_error(bad_meta, 1)


def test_invalid_training_settings(
    cli: Cli, tiny_base: Path, tmp_path: Path, datasets_dir: Path
) -> None:
    data = tmp_path / "data.npz"
    images = np.zeros((8, 28, 28), dtype=np.uint8)
    np.savez(data, train_images=images, train_labels=np.arange(8) % 2)
    local = ["--base", tiny_base, "--hospital", "h", "-o", tmp_path / "v.safetensors"]
    assert_one_line_error(cli("train", "--data", data, "--lr", "0", *local), 1, "lr")
    blood = datasets_dir / "bloodmnist.npz"  # 8 classes, the tiny base has 2
    assert_one_line_error(cli("train", "--data", blood, *local), 1, "2 classes")
    assert_one_line_error(cli("eval", "--model", tiny_base, "--data", blood), 1, "2 classes")
    wrong_layout = tmp_path / "other.npz"
    np.savez(wrong_layout, x=images)
    assert_one_line_error(cli("train", "--data", wrong_layout, *local), 1)


def test_eval_and_predict_on_bad_inputs(
    cli: Cli, base_record: dict[str, Any], tmp_path: Path, datasets_dir: Path
) -> None:
    data = datasets_dir / "pneumoniamnist.npz"
    missing_model = cli("eval", "--model", tmp_path / "none.safetensors", "--data", data)
    assert_one_line_error(missing_model, 1, "none.safetensors")
    not_data = tmp_path / "notes.npz"
    not_data.write_text("not an archive")
    assert_one_line_error(cli("eval", "--model", base_record["path"], "--data", not_data), 1)
    not_a_model = tmp_path / "model.safetensors"
    not_a_model.write_text("not a model")
    assert_one_line_error(cli("eval", "--model", not_a_model, "--data", data), 1)

    not_an_image = tmp_path / "scan.png"
    not_an_image.write_text("not a png")
    assert_one_line_error(cli("predict", "--model", base_record["path"], not_an_image), 1)
    assert_one_line_error(cli("predict", "--model", tmp_path / "none.safetensors", not_an_image), 1)


class _Corrupting(httpx.HTTPTransport):
    """Flips one byte of every downloaded body (a corrupted transfer)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.endswith("/download"):
            return response
        body = bytearray(response.read())
        body[len(body) // 2] ^= 0xFF
        return httpx.Response(
            response.status_code, headers=response.headers, content=bytes(body), request=request
        )


def test_corrupted_download_is_refused_and_leaves_nothing(
    registry: Registry, base_record: dict[str, Any], tmp_path: Path
) -> None:
    dest = tmp_path / "base.safetensors"
    with (
        RegistryClient(registry.url, registry.admin_token, transport=_Corrupting()) as client,
        pytest.raises(CliError, match="sha256 mismatch"),
    ):
        download_verified(client, f"/bases/{base_record['id']}/download", dest)
    assert list(tmp_path.iterdir()) == []
