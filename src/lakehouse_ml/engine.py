"""The Spark engine: one Spark Connect session per process, started from ``conf/<env>/spark.yml``.

Three modes (docs/pages/engine.md: what the embedded engine lacks, and what the code does about it):

- ``embedded``: pysail's Spark Connect server in this process on a free loopback port;
- ``remote``: an existing Spark Connect endpoint (``SPARK_REMOTE`` or ``remote.url``);
- ``classic``: a local JVM Spark with delta-spark; the Delta jars are resolved from Maven Central
  through Spark's package mechanism and cached (``classic.ivy_dir``), or taken from
  ``classic.jars`` offline.

kedro-datasets' Spark datasets call ``SparkSession.builder.getOrCreate()``, which finds a Connect
session only through the ``SPARK_REMOTE`` environment variable, so the engine sets it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyspark.sql import SparkSession

from lakehouse_ml.capabilities import DELTA_CATALOG, DELTA_EXTENSION, EngineCapabilityError, check_delta

logger = logging.getLogger(__name__)

MODES = ("embedded", "remote", "classic")

# Spark's session extension and catalog that turn on Delta Lake SQL (MERGE INTO, time travel).
DELTA_SPARK_CONF = {
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
}

# Spark Connect's default port when a URL names none.
CONNECT_DEFAULT_PORT = 15002

# Where resolved Maven packages are cached, so a second start does not download again.
DEFAULT_IVY_DIR = "~/.cache/lakehouse_ml/ivy"

# delta-spark's Maven artifact pulls jars that pyspark already ships (Hadoop client, Parquet,
# Jackson, log4j, ...), some at other versions; two copies on one classpath is a classic source of
# NoSuchMethodError, so only Delta's own jars are taken from Maven.
DELTA_PACKAGE_EXCLUDES = (
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.parquet:parquet-column",
    "org.apache.parquet:parquet-common",
    "org.apache.parquet:parquet-encoding",
    "org.apache.parquet:parquet-format-structures",
    "org.apache.parquet:parquet-hadoop",
    "org.apache.parquet:parquet-jackson",
    "com.fasterxml.jackson.core:jackson-annotations",
    "com.fasterxml.jackson.core:jackson-core",
    "com.fasterxml.jackson.core:jackson-databind",
    "com.fasterxml.jackson.datatype:jackson-datatype-jdk8",
    "org.apache.logging.log4j:log4j-api",
    "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-slf4j2-impl",
    "org.slf4j:slf4j-api",
    "org.xerial.snappy:snappy-java",
    "com.github.luben:zstd-jni",
    "org.roaringbitmap:RoaringBitmap",
    "commons-logging:commons-logging",
)


class EngineError(RuntimeError):
    """The Spark engine could not be started as configured."""


@dataclass(frozen=True)
class EngineConfig:
    """What ``spark.yml`` says about the engine."""

    mode: str = "embedded"
    app_name: str = "lakehouse_ml"
    spark_conf: dict[str, str] = field(default_factory=dict)
    remote_url: str | None = None
    remote_connect_timeout: float = 5.0
    remote_check_delta: bool = True
    embedded_host: str = "127.0.0.1"
    embedded_env: dict[str, str] = field(default_factory=dict)
    classic_master: str = "local[*]"
    classic_jars: tuple[str, ...] = ()
    classic_delta_package: str | None = None
    classic_ivy_dir: str = DEFAULT_IVY_DIR

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> EngineConfig:
        """Build the config from the ``spark`` configuration dict, checking the mode."""
        mode = str(config.get("mode", "embedded"))
        if mode not in MODES:
            raise EngineError(f"spark.yml: mode must be one of {', '.join(MODES)}, got {mode!r}")
        embedded = config.get("embedded") or {}
        classic = config.get("classic") or {}
        remote = config.get("remote") or {}
        return cls(
            mode=mode,
            app_name=str(config.get("app_name", "lakehouse_ml")),
            spark_conf={k: str(v) for k, v in (config.get("spark_conf") or {}).items()},
            remote_url=remote.get("url"),
            remote_connect_timeout=float(remote.get("connect_timeout", 5.0)),
            remote_check_delta=bool(remote.get("check_delta", True)),
            embedded_host=str(embedded.get("host", "127.0.0.1")),
            embedded_env={k: str(v) for k, v in (embedded.get("env") or {}).items()},
            classic_master=str(classic.get("master", "local[*]")),
            classic_jars=tuple(classic.get("jars") or ()),
            classic_delta_package=classic.get("delta_package") or None,
            classic_ivy_dir=str(classic.get("ivy_dir") or DEFAULT_IVY_DIR),
        )


def shown(url: str) -> str:
    """``url`` for logs and errors: its parameters (``;token=…``, ``;user_id=…``) left out."""
    base, _, params = url.partition(";")
    return f"{base};…" if params else base


def connect_error(host: str, port: int, timeout: float) -> OSError | None:
    """Why a TCP connection to ``host:port`` failed within ``timeout`` seconds; None if it was accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return error


def check_reachable(url: str, timeout: float) -> None:
    """Fail within ``timeout`` seconds, naming ``url``, when nothing listens there.

    The Connect client itself retries an unreachable server with backoff for minutes before the
    first query fails.
    """
    address = urlsplit("//" + url.removeprefix("sc://").split("/", 1)[0].split(";", 1)[0])
    host = address.hostname or "localhost"
    try:
        port_number = address.port or CONNECT_DEFAULT_PORT
    except ValueError:
        raise EngineError(f"Spark Connect URL {shown(url)!r}: the port is not a number") from None
    error = connect_error(host, port_number, timeout)
    if error is not None:
        raise EngineError(
            f"no Spark Connect server answers at {shown(url)} ({host}:{port_number}: {error}) within "
            f"{timeout:g} s. Start it (the local cluster: python -m lakehouse_ml.cluster start), or "
            "point SPARK_REMOTE / remote.url in conf/<env>/spark.yml at a running one"
        ) from None


def missing_classic_jars(jars: tuple[str, ...]) -> list[str]:
    """Return the configured offline jars (``classic.jars``) that are not on disk."""
    return [jar for jar in jars if not Path(jar).is_file()]


def delta_package(configured: str | None = None) -> str:
    """The Maven coordinate of delta-spark for this pyspark: ``configured`` if set, else derived.

    Derived as delta-spark's own ``configure_spark_with_delta_pip`` does, from the installed
    pyspark (``delta-spark_<spark major.minor>_2.13``) and the delta-spark pip version. A Python-only
    patch release of delta-spark (4.4.1) has no jar of its own on Maven: spark.yml then names the
    jar's version in ``classic.delta_package``.
    """
    if configured:
        return configured
    from importlib.metadata import PackageNotFoundError, version

    import pyspark

    try:
        delta_version = version("delta-spark")
    except PackageNotFoundError as error:
        raise EngineError(
            "spark.yml classic.delta_package is not set and the delta-spark pip package is not "
            "installed to derive it (expected e.g. io.delta:delta-spark_4.2_2.13:4.4.0)"
        ) from error
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{delta_version}"


def java_executable() -> str:
    """The ``java`` that pyspark will launch (``$JAVA_HOME/bin/java``, else ``java`` on PATH).

    Raises naming what is missing, instead of pyspark's "Java gateway process exited".
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not java.is_file():
            raise EngineError(
                f"classic Spark needs Java 17+: JAVA_HOME is set to {java_home!r} but "
                f"{java} does not exist; point JAVA_HOME at a JDK or unset it to use java on PATH"
            )
        return str(java)
    found = shutil.which("java")
    if not found:
        raise EngineError(
            "classic Spark needs Java 17+: JAVA_HOME is not set and there is no 'java' on PATH; "
            "install a JDK (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    return found


def classic_jar_conf(config: EngineConfig) -> dict[str, str]:
    """Spark settings that put Delta Lake's jars on the classpath: offline jars, or Maven packages."""
    if config.classic_jars:
        missing = missing_classic_jars(config.classic_jars)
        if missing:
            raise EngineError(
                "spark.yml classic.jars lists jars that are not on disk: "
                f"{', '.join(missing)} (leave classic.jars empty to resolve Delta from Maven)"
            )
        return {"spark.jars": ",".join(config.classic_jars)}
    return {
        "spark.jars.packages": delta_package(config.classic_delta_package),
        "spark.jars.excludes": ",".join(DELTA_PACKAGE_EXCLUDES),
        "spark.jars.ivy": str(Path(config.classic_ivy_dir).expanduser()),
    }


class SparkEngine:
    """Owns the process's Spark session and, in embedded mode, the pysail server behind it."""

    def __init__(self) -> None:
        self._server: Any = None
        self._session: SparkSession | None = None
        self._previous_remote: str | None = None
        self.config: EngineConfig | None = None

    @property
    def running(self) -> bool:
        """Whether this engine has started a session that is still open."""
        return self._session is not None

    @property
    def session(self) -> SparkSession:
        """The running session; raises if the engine was not started."""
        if self._session is None:
            raise EngineError("the Spark engine is not running; start it with engine.start()")
        return self._session

    @property
    def url(self) -> str | None:
        """The Spark Connect URL in use (``None`` in classic mode)."""
        return os.environ.get("SPARK_REMOTE") if self.running else None

    def start(self, config: EngineConfig) -> SparkSession:
        """Start the session for ``config``; a no-op returning the session if already running."""
        if self._session is not None:
            return self._session
        started = time.perf_counter()
        self._previous_remote = os.environ.get("SPARK_REMOTE")
        starter = {
            "embedded": self._start_embedded,
            "remote": self._start_remote,
            "classic": self._start_classic,
        }[config.mode]
        self._session = starter(config)
        self.config = config
        logger.info(
            "Spark engine '%s' ready in %.2f s (%s)",
            config.mode,
            time.perf_counter() - started,
            shown(self.url) if self.url else config.classic_master,
        )
        return self._session

    def stop(self) -> None:
        """Stop the session, then the embedded server (in that order, or exit can hang)."""
        if self._session is not None:
            try:
                self._session.stop()
            finally:
                self._session = None
        if self._server is not None:
            try:
                self._server.stop()
            finally:
                self._server = None
        if self.config is not None:
            self._restore_remote()
            self.config = None
            logger.info("Spark engine stopped")

    def _start_embedded(self, config: EngineConfig) -> SparkSession:
        for key, value in config.embedded_env.items():
            os.environ.setdefault(key, value)
        from pysail.spark import SparkConnectServer

        server = SparkConnectServer(config.embedded_host, 0)
        server.start(background=True)
        host, port = server.listening_address
        self._server = server
        os.environ["SPARK_REMOTE"] = f"sc://{host}:{port}"
        try:
            return self._connect(config, os.environ["SPARK_REMOTE"])
        except Exception:
            server.stop()
            self._server = None
            self._restore_remote()
            raise

    def _start_remote(self, config: EngineConfig) -> SparkSession:
        url = os.environ.get("SPARK_REMOTE") or config.remote_url
        if not url:
            raise EngineError(
                "spark.yml mode 'remote' needs a Spark Connect URL: set SPARK_REMOTE "
                "(e.g. sc://host:15002) or remote.url in conf/<env>/spark.yml"
            )
        check_reachable(url, config.remote_connect_timeout)
        os.environ["SPARK_REMOTE"] = url
        session = None
        try:
            session = self._connect(config, url)
            if config.remote_check_delta:
                check_delta(session, shown(url))
        except BaseException as error:
            # Leave the process as it was: no session a later start would get back, no URL.
            if session is not None:
                session.stop()
            self._restore_remote()
            if isinstance(error, EngineCapabilityError):
                raise EngineError(str(error)) from error
            raise
        return session

    def _start_classic(self, config: EngineConfig) -> SparkSession:
        # Checked before anything changes, so a failed start leaves the process as it was.
        java_executable()
        jar_conf = classic_jar_conf(config)
        # A Connect URL in the environment would turn the builder into a Connect client, and so
        # would the flag pyspark sets once a Connect session existed in this process (or its parent).
        os.environ.pop("SPARK_REMOTE", None)
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        builder = SparkSession.builder.master(config.classic_master).appName(config.app_name)
        for key, value in {**jar_conf, **DELTA_SPARK_CONF, **config.spark_conf}.items():
            builder = builder.config(key, value)
        try:
            return builder.getOrCreate()
        except Exception as error:
            self._restore_remote()
            source = jar_conf.get("spark.jars.packages") or jar_conf.get("spark.jars")
            raise EngineError(
                f"classic Spark did not start ({type(error).__name__}: {error}). If the JVM "
                f"printed 'unresolved dependency', Delta Lake ({source}) could not be resolved "
                f"from Maven Central into {jar_conf.get('spark.jars.ivy', 'classic.jars')}: check "
                "the network, spark.yml classic.delta_package, or list local jars in classic.jars"
            ) from error

    @staticmethod
    def _connect(config: EngineConfig, url: str) -> SparkSession:
        session = SparkSession.builder.remote(url).appName(config.app_name).getOrCreate()
        for key, value in config.spark_conf.items():
            session.conf.set(key, value)
        return session

    def _restore_remote(self) -> None:
        if self._previous_remote is None:
            os.environ.pop("SPARK_REMOTE", None)
        else:
            os.environ["SPARK_REMOTE"] = self._previous_remote
        self._previous_remote = None


# One engine per process: Spark sessions are process-wide by nature, and kedro-datasets finds the
# session through process state (SPARK_REMOTE / the active session) as well. It is kept on `sys`
# because Jupyter's %reload_kedro re-imports project modules: a fresh module-level engine would
# start a second server while the first one keeps running.
ENGINE: SparkEngine = getattr(sys, "_lakehouse_ml_engine", None) or SparkEngine()
sys._lakehouse_ml_engine = ENGINE  # type: ignore[attr-defined]


def get_spark() -> SparkSession:
    """Return the running session of this process (started by the Kedro hook or a test)."""
    return ENGINE.session if ENGINE.running else SparkSession.builder.getOrCreate()
