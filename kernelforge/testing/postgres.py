"""A private, throwaway PostgreSQL server for tests of shared study storage: started, stopped and restarted at will.

It runs Debian's ``postgresql`` binaries on a free loopback port with its own data folder (as the ``postgres``
user when the tests run as root, since the server refuses root), so a test owns it entirely: no system
cluster is touched, and stopping it mid-study is safe.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "kf"
PASSWORD = "kf-secret"


def binaries() -> Path | None:
    """Return the folder of PostgreSQL's server binaries (``initdb``, ``pg_ctl``), or None when not installed."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server of its own: ``start()``, ``stop()``, ``url(database)``, ``create_database(name)``.

    Host connections need the password (scram-sha-256), so a wrong one is refused as on a real deployment.
    """

    def __init__(self) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="kf-pg-"))
        os.chmod(self.root, 0o755)  # the postgres user needs to reach its data folder
        self.data = self.root / "data"
        self.port = _free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.data.mkdir()
        if self._as:  # the server writes its data, log and socket here
            for path in (self.root, self.data):
                shutil.chown(path, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        os.chmod(pwfile, 0o644)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server at once (open connections are cut, as when a server dies)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres", driver: str = "", password: str = PASSWORD) -> str:
        """Return the SQLAlchemy URL of a database (``driver``: ``""``, ``psycopg`` or ``psycopg2``)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        """Stop the server (if running) and delete its data."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_down(self, seconds: float = 10.0) -> None:
        """Wait until the port refuses connections."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)
