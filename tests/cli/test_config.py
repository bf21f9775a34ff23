"""Profiles: flag > env > profile, 0600 file in a 0700 folder, env override notices."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hospital_cli.config import Profile, ProfileStore, resolve
from hospital_cli.main import app


@pytest.fixture()
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cfg"
    monkeypatch.setenv("MEDVEC_CONFIG_DIR", str(folder))
    for name in ("MEDVEC_SERVER", "MEDVEC_TOKEN", "MEDVEC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return folder


def _store(config_dir: Path) -> ProfileStore:
    store = ProfileStore(path=config_dir / "profiles.toml", active="a")
    store.profiles = {
        "a": Profile(server="http://a", token="tok-a"),
        "b": Profile(server="http://b", token="tok-b"),
    }
    store.save()
    return store


def test_profiles_file_is_private(config_dir: Path) -> None:
    _store(config_dir)
    assert stat.S_IMODE((config_dir / "profiles.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700


def test_precedence_flag_env_profile(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(config_dir)
    assert resolve().server == "http://a"
    assert resolve(profile="b").token == "tok-b"
    monkeypatch.setenv("MEDVEC_PROFILE", "b")
    assert resolve().server == "http://b"
    monkeypatch.setenv("MEDVEC_TOKEN", "tok-env")
    env_wins = resolve()
    assert env_wins.token == "tok-env"
    assert any("MEDVEC_TOKEN" in n for n in env_wins.notices)
    assert resolve(token="tok-flag").token == "tok-flag"


def test_profiles_list_and_use(config_dir: Path) -> None:
    _store(config_dir)
    runner = CliRunner()
    listed = runner.invoke(app, ["profiles", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert "tok-a" not in listed.stdout  # tokens are masked
    assert runner.invoke(app, ["profiles", "use", "b"]).exit_code == 0
    assert ProfileStore.load().active == "b"
    missing = runner.invoke(app, ["profiles", "use", "nope"])
    assert missing.exit_code != 0


def test_not_logged_in_is_one_clear_line(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hospital_cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["whoami"])
    assert exit_info.value.code == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "medvec login" in err[0]
