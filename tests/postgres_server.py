"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary folder, a free port on
loopback, password (SCRAM) authentication over TCP as a user would have it, torn down at the
end. Run as root (as CI does), the server runs as Debian's ``postgres`` user, which refuses to
run as root."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.pacs_servers import free_port

USER = "asyncdicom"
PASSWORD = "test-only-secret"  # given to the runs through PGPASSWORD, never in a config


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps them out of PATH)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        msg = "PostgreSQL is not installed: scripts/test installs Debian's postgresql"
        raise RuntimeError(msg)
    return versions[-1]


class Postgres:
    """One cluster; :attr:`url` for configs, :attr:`env` for the processes that connect."""

    def __init__(self, folder: Path | None = None, *, durable: bool = False) -> None:
        # not under pytest's folders, which only root may enter: the server runs as 'postgres'
        self.folder = folder or Path(tempfile.mkdtemp(prefix="asyncdicom-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0
        self.durable = durable  # fsync on, as a real server: for benchmarks (the tests need not pay for it)

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/asyncdicom"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": PASSWORD}

    def _user(self) -> dict[str, Any]:
        """Popen's arguments that run a program as 'postgres' (as root), so that signals sent to
        the process reach the server itself (a wrapper such as runuser would not pass them on)."""
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}

    def _own(self, path: Path) -> None:
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> Postgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        self._own(self.folder)
        secret = self.folder / "password"
        secret.write_text(PASSWORD)
        self._own(secret)
        tools = bin_dir()
        subprocess.run(
            [
                str(tools / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--pwfile",
                str(secret),
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._user(),
        )
        self._launch()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE asyncdicom")
        return self

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _launch(self) -> None:
        tools = bin_dir()
        self.process = subprocess.Popen(
            [
                str(tools / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"fsync={'on' if self.durable else 'off'}",
                "-c",
                "max_connections=60",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._user(),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    msg = "PostgreSQL did not start"
                    raise RuntimeError(msg) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected (SIGTERM's smart shutdown would wait for them)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            assert not self.port_open(), "PostgreSQL still listens after it was stopped"
        self.process = None

    def port_open(self) -> bool:
        import socket

        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def restart(self) -> None:
        self.stop()
        self._launch()

    def resume(self) -> None:
        """Start the stopped server again."""
        self._launch()

    def query(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> list[tuple[object, ...]]:
        """Rows of ``sql`` in the test database."""
        with psycopg.connect(self.admin_url.rsplit("/", 1)[0] + "/asyncdicom", autocommit=True) as conn:
            cursor = conn.execute(sql, params)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
