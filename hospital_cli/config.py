"""Profiles: where the CLI finds its registry URL and token.

Profiles live in ``profiles.toml`` inside ``MEDVEC_CONFIG_DIR`` (or the platform's user
config dir). The file is written 0600 and its folder 0700 because it holds tokens.
Precedence for every value: command-line flag > environment variable > profile.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import tomli_w

from hospital_cli.errors import CliError

CONFIG_DIR_ENV = "MEDVEC_CONFIG_DIR"
CACHE_DIR_ENV = "MEDVEC_CACHE_DIR"
SERVER_ENV = "MEDVEC_SERVER"
TOKEN_ENV = "MEDVEC_TOKEN"
PROFILE_ENV = "MEDVEC_PROFILE"
DEFAULT_PROFILE = "default"
PROFILES_FILE = "profiles.toml"


def config_dir() -> Path:
    """The folder holding ``profiles.toml`` (resolved on every call, never cached)."""
    value = os.environ.get(CONFIG_DIR_ENV)
    return Path(value) if value else Path(platformdirs.user_config_dir("medvec"))


def cache_dir() -> Path:
    """The folder holding downloaded bases and upload resume state."""
    value = os.environ.get(CACHE_DIR_ENV)
    if value:
        return Path(value)
    if os.environ.get(CONFIG_DIR_ENV):
        return config_dir() / "cache"
    return Path(platformdirs.user_cache_dir("medvec"))


@dataclass
class Profile:
    server: str | None = None
    token: str | None = None


@dataclass
class ProfileStore:
    """The whole profiles file: named profiles and which one is active."""

    path: Path
    active: str = DEFAULT_PROFILE
    profiles: dict[str, Profile] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> ProfileStore:
        path = path or config_dir() / PROFILES_FILE
        if not path.is_file():
            return cls(path=path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(
                f"cannot read the profiles file {path}: {exc}",
                hint="fix or delete it, then run `medvec login` again",
            ) from exc
        profiles = {
            name: Profile(server=entry.get("server"), token=entry.get("token"))
            for name, entry in data.get("profiles", {}).items()
        }
        return cls(path=path, active=data.get("active", DEFAULT_PROFILE), profiles=profiles)

    def save(self) -> None:
        """Write the file 0600 in a 0700 folder, through a temp file renamed into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        payload = {
            "active": self.active,
            "profiles": {
                name: {k: v for k, v in vars(p).items() if v is not None}
                for name, p in sorted(self.profiles.items())
            },
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            tomli_w.dump(payload, stream)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Resolved:
    """The server and token one command uses, and where each came from."""

    profile: str
    server: str | None
    token: str | None
    notices: tuple[str, ...] = ()


def _pick(
    flag: str | None, env_name: str, profile_value: str | None, what: str, profile: str
) -> tuple[str | None, str | None]:
    if flag:
        return flag, None
    env_value = os.environ.get(env_name)
    if env_value:
        notice = None
        if profile_value and profile_value != env_value:
            notice = f"using {what} from {env_name} (overrides profile '{profile}')"
        return env_value, notice
    return profile_value, None


def resolve(
    *, profile: str | None = None, server: str | None = None, token: str | None = None
) -> Resolved:
    """Apply flag > env > profile to the server URL and token."""
    store = ProfileStore.load()
    name = profile or os.environ.get(PROFILE_ENV) or store.active
    if profile and name not in store.profiles and not (server and token):
        known = ", ".join(sorted(store.profiles)) or "none"
        raise CliError(f"no profile named '{name}' (known: {known})", hint="run `medvec login`")
    stored = store.profiles.get(name, Profile())
    server_value, server_note = _pick(server, SERVER_ENV, stored.server, "the server", name)
    token_value, token_note = _pick(token, TOKEN_ENV, stored.token, "the token", name)
    notices = tuple(n for n in (server_note, token_note) if n)
    return Resolved(name, server_value, token_value, notices)
