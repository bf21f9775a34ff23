"""login / whoami / logout / profiles against the live registry, and the one-line failures."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from tests.cli.conftest import (
    Hospital,
    Registry,
    assert_one_line_error,
    free_port,
    new_hospital,
)


def test_login_whoami_logout(
    cli: Any, registry: Registry, hospital: Hospital, tmp_path: Path
) -> None:
    login = cli("login", "--server", registry.url, "--token", hospital.token, "--profile", "h1")
    assert login.exit_code == 0, login.stderr
    profiles = tmp_path / "config" / "profiles.toml"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    assert stat.S_IMODE(profiles.parent.stat().st_mode) == 0o700

    who = cli("whoami", "--json")
    assert who.exit_code == 0, who.stderr
    assert who.json()["hospital_name"] == hospital.name
    assert who.json()["role"] == "hospital"
    assert who.json()["profile"] == "h1"

    # the environment wins over the profile, and the CLI says so
    env_wins = cli("whoami", "--json", env={"MEDVEC_TOKEN": registry.admin_token})
    assert env_wins.json()["role"] == "admin"
    assert "MEDVEC_TOKEN" in env_wins.stderr

    assert cli("logout").exit_code == 0
    assert_one_line_error(cli("whoami"), 4, "medvec login")


def test_profiles_switch_between_identities(cli: Any, registry: Registry) -> None:
    first, second = new_hospital(registry), new_hospital(registry)
    for name, who in (("first", first), ("second", second)):
        result = cli("login", "--server", registry.url, "--token", who.token, "--profile", name)
        assert result.exit_code == 0, result.stderr

    listed = cli("profiles", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = {row["name"]: row for row in listed.json()}
    assert set(rows) == {"first", "second"}
    assert rows["second"]["active"] == "*"  # the last login is active
    assert first.token not in listed.stdout and second.token not in listed.stdout

    assert cli("whoami", "--json").json()["hospital_name"] == second.name
    assert cli("profiles", "use", "first").exit_code == 0
    assert cli("whoami", "--json").json()["hospital_name"] == first.name
    flag = cli("whoami", "--json", "--profile", "second")
    assert flag.json()["hospital_name"] == second.name
    env = cli("whoami", "--json", env={"MEDVEC_PROFILE": "second"})
    assert env.json()["hospital_name"] == second.name
    assert_one_line_error(cli("profiles", "use", "third"), 1, "no profile named 'third'")


def test_bad_token_is_one_line(cli: Any, registry: Registry) -> None:
    result = cli("whoami", "--server", registry.url, "--token", "mv_not-a-real-token")
    assert_one_line_error(result, 4, "medvec login")


def test_revoked_token_is_refused(cli: Any, registry: Registry, hospital: Hospital) -> None:
    with registry.admin() as admin:
        tokens = [t for t in admin.list_tokens() if t.get("hospital_id") == hospital.id]
        assert len(tokens) == 1
        admin.revoke_token(str(tokens[0]["id"]))
    result = cli("whoami", "--server", registry.url, "--token", hospital.token)
    assert_one_line_error(result, 4)


def test_unreachable_server_is_one_line(cli: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(cli("whoami", "--server", url, "--token", "mv_x"), 3, "cannot reach")


def test_login_refuses_a_bad_token(cli: Any, registry: Registry, tmp_path: Path) -> None:
    result = cli("login", "--server", registry.url, "--token", "mv_wrong")
    assert_one_line_error(result, 4)
    assert not (tmp_path / "config" / "profiles.toml").exists()
