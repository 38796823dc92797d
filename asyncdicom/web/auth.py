"""Credentials for a DICOMweb source, from where ``pacs.auth`` says: an environment variable or a
command's output for a bearer token, an environment variable for a password. Nothing secret is
ever in the YAML, a log line or an error message."""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable

from asyncdicom.config.schema import AuthConfig
from asyncdicom.errors import ConfigError

MAX_TOKEN = 16 * 1024  # bytes of a token command's output
COMMAND_TIMEOUT = 60.0
TOKEN_LIFETIME = 45 * 60.0  # a command's token is asked for again after this long (cloud tokens last an hour)


class Credentials:
    """The Authorization header of every request; thread-safe. A token from a command is fetched
    once, then again when it is old or the server answers 401 (:meth:`refresh`)."""

    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._fetched = 0.0

    @property
    def refreshable(self) -> bool:
        """Whether asking again may give another token (a command, or an environment variable that
        another process may have updated is not: it is read at each request anyway)."""
        return bool(self.config.token_command)

    def header(self) -> str:
        """The value of the Authorization header."""
        config = self.config
        if config.type == "basic":
            password = _env(config.password_env, "pacs.auth.password_env")
            pair = f"{config.username}:{password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        if config.token_env:
            return "Bearer " + _env(config.token_env, "pacs.auth.token_env")
        with self._lock:
            if self._token is None or self._clock() - self._fetched > TOKEN_LIFETIME:
                self._token = _run(config.token_command)
                self._fetched = self._clock()
            return "Bearer " + self._token

    def refresh(self) -> bool:
        """Forget the command's token (the server refused it); whether a new one will be asked for."""
        with self._lock:
            self._token = None
        return self.refreshable


def _env(name: str, key: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(key, f"the environment variable {name} is not set or empty; export it before the run")
    return value


def _run(command: str) -> str:
    """A token: the first line a command prints, run without a shell."""
    where = "pacs.auth.token_command"
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, timeout=COMMAND_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise ConfigError(
            where, f"the command {shlex.split(command)[0]!r} is not found; check its name and PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(where, f"the command gave no token within {COMMAND_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise ConfigError(where, f"the command cannot be run ({exc.strerror})") from None
    if done.returncode != 0:
        raise ConfigError(where, f"the command failed (exit {done.returncode}); run it yourself to see why")
    output = done.stdout[:MAX_TOKEN]
    lines = output.decode("ascii", "replace").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token or len(done.stdout) > MAX_TOKEN or any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ConfigError(where, "the command did not print a token (one line of printable characters) on its output")
    return token
