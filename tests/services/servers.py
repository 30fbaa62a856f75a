"""Real team services on loopback for the tests marked ``services``: PostgreSQL, Redis, an MLflow server.

Each ``start_*`` launches the Debian-packaged server (``.ci/run`` installs the packages when they
are absent) on a free port under a folder of its own, waits until it answers and returns a handle
whose ``stop()`` ends it. PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` system user the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
PG_USER, PG_PASSWORD = "lakehouse", "lakehouse-pg-secret"
REDIS_PASSWORD = "lakehouse-redis-secret"
MLFLOW_ADMIN, MLFLOW_ADMIN_PASSWORD = "admin", "lakehouse-mlflow-admin-1"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(port: int, process: subprocess.Popen | None, log: Path, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(port):
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not answer on 127.0.0.1:{port} within {timeout:.0f} s; its log ends:\n{tail}")


def _pg_tool(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: apt-get install postgresql (as .ci/run does)")
    return found


def _as_postgres_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class Postgres:
    """A PostgreSQL server with one password-authenticated role owning the databases it creates."""

    root: Path
    port: int
    user: str = PG_USER
    password: str = PG_PASSWORD

    def url(self, database: str, *, driver: str = "postgresql+psycopg", credentials: bool = True) -> str:
        """A SQLAlchemy URL of ``database`` (created on first call)."""
        self.create_database(database)
        auth = f"{self.user}:{self.password}@" if credentials else ""
        return f"{driver}://{auth}127.0.0.1:{self.port}/{database}"

    def create_database(self, database: str) -> None:
        """Create ``database`` owned by the role, if missing."""
        env = {**os.environ, "PGPASSWORD": self.password}
        exists = subprocess.run(
            [
                _pg_tool("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{database}'",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not exists:
            subprocess.run(
                [_pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, database],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended)."""
        subprocess.run(
            [*_as_postgres_user(), _pg_tool("pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{what} failed ({' '.join(command)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def start_postgres(parent: Path) -> Postgres:
    """initdb a fresh cluster (scram-sha-256 on loopback) and start it on a free port.

    Its folder is a new one in ``parent``; under root it is made in the system's temporary folder
    instead and given to ``postgres`` (pytest's folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="lakehouse-pg-")) if os.geteuid() == 0 else parent / "postgres"
    root.mkdir(parents=True, exist_ok=True)
    data, log, password_file = root / "data", root / "postgres.log", root / "pwfile"
    password_file.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(password_file, "postgres", "postgres")
    _run(
        [
            *_as_postgres_user(),
            _pg_tool("initdb"),
            "-D",
            str(data),
            "-U",
            PG_USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ],
        "initdb",
    )
    password_file.unlink()
    port = free_port()
    _run(
        [
            *_as_postgres_user(),
            _pg_tool("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            "start",
        ],
        "starting PostgreSQL",
    )
    _wait(port, None, log, "PostgreSQL")
    return Postgres(root, port)


@dataclass
class Redis:
    """A Redis server with a password (``requirepass``)."""

    root: Path
    port: int
    process: subprocess.Popen
    password: str = REDIS_PASSWORD

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (no password in it: pass ``password`` apart)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server without saving."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_redis(root: Path, port: int | None = None) -> Redis:
    """Start ``redis-server`` on a free port (or ``port``), no persistence, with a password."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server (as .ci/run does)")
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = root / "redis.log"
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            REDIS_PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
            "--logfile",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    _wait(port, process, log, "Redis")
    return Redis(root, port, process)


@dataclass
class MlflowServer:
    """``mlflow server`` on PostgreSQL with proxied artifacts and basic authentication."""

    root: Path
    port: int
    process: subprocess.Popen
    users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The tracking URI."""
        return f"http://127.0.0.1:{self.port}"

    def add_user(self, username: str, password: str) -> None:
        """Create a user with the server's default permission (EDIT here) through the auth API."""
        from mlflow.server.auth.client import AuthServiceClient

        previous = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            MLFLOW_ADMIN,
            MLFLOW_ADMIN_PASSWORD,
        )
        try:
            AuthServiceClient(self.url).create_user(username, password)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.users[username] = password

    def stop(self) -> None:
        """Stop the server and its workers."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)


def start_mlflow_server(
    root: Path,
    postgres: Postgres,
    *,
    port: int | None = None,
    workers: int = 2,
    database: str = "mlflow",
) -> MlflowServer:
    """``mlflow server --app-name basic-auth``: runs and registry on ``postgres`` (database
    ``database``), users on ``<database>_auth``, artifacts proxied to ``root/artifacts``. Started
    again with the same ``root``, ``port`` and ``database`` it is the same server (a restart)."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = EDIT\n"
        f"database_uri = {postgres.url(database + '_auth')}\n"
        f"admin_username = {MLFLOW_ADMIN}\n"
        f"admin_password = {MLFLOW_ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A password check costs the server ~0.3 s of CPU (PBKDF2); a run makes thousands of requests.
        "auth_cache_ttl_seconds = 300\n"
    )
    log = root / "mlflow.log"
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "lakehouse-tests"}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--app-name",
                "basic-auth",
                "--backend-store-uri",
                postgres.url(database),
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait(port, process, log, "the MLflow server", timeout=180)
    return MlflowServer(root, port, process)
