"""A real, temporary PostgreSQL server for tests: initdb + pg_ctl on a free loopback port.

The server's binaries come from the machine (`make test` installs Debian's postgresql
package when they are missing, see scripts/ensure-postgres.sh). The cluster lives in a
temporary folder, listens on 127.0.0.1 only (its unix socket stays in that folder), and
asks for a password (scram-sha-256) on every connection. initdb refuses to run as root,
so under root the server runs as the `postgres` system user. `user` is the cluster's
bootstrap superuser, so `url` may also create extensions and foreign servers.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "ServerUnavailableError", "find_pg_bin"]

INSTALL_HINT = "`make test` installs them (scripts/ensure-postgres.sh)"


class ServerUnavailableError(RuntimeError):
    """The test server cannot be started on this machine; the message says why."""


def find_pg_bin() -> Path:
    """Find the folder holding initdb and pg_ctl, or fail with how to get them."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    # Debian's layout: /usr/lib/postgresql/<major>/bin; the newest major wins.
    candidates = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if candidates:
        return max(candidates, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    raise ServerUnavailableError(
        f"PostgreSQL server binaries (initdb, pg_ctl) are missing; {INSTALL_HINT}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """Start with `start()`, stop with `stop()` (safe to call after a failed start).

    `url` connects as `user`, who owns the cluster (a superuser) and logs in with `password`.
    `settings` are extra server settings (e.g. {"shared_buffers": "128MB"}) written to the
    cluster's postgresql.conf; `parent` is the folder to make the cluster's folder in (the
    system's temporary folder by default), for clusters too big for it.
    """

    user = "shoal_test"
    password = "s3cret-pw"

    def __init__(
        self, *, settings: dict[str, str] | None = None, parent: Path | None = None
    ) -> None:
        self.bin = find_pg_bin()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailableError(
                    "running as root needs a `postgres` system user to run the server; "
                    + INSTALL_HINT
                ) from None
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="shoal-pg-", dir=parent))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        self.root.chmod(0o755)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", self.user,
            "--pwfile", str(pwfile),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )  # fmt: skip
        if self.settings:
            # The config file, not `-o`: pg_ctl hands `-o` to a shell, values would need quoting.
            with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
                for name, value in self.settings.items():
                    quoted = value.replace("'", "''")
                    conf.write(f"{name} = '{quoted}'\n")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._started = True  # from here on a stop is needed, even if the start fails
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
        return self

    @property
    def postmaster_pid(self) -> int | None:
        """The running server's main process id, or None when it is not running."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        try:
            if self._started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        except ServerUnavailableError:
            pass  # it never came up, or is gone already
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        argv = [str(self.bin / program), *args]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = (getattr(exc, "stderr", None) or "").strip()
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServerUnavailableError(f"{program} failed: {output}\n{log}".strip()) from exc
