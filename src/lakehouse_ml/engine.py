"""The Spark engine: one Spark Connect session per process, started from ``conf/<env>/spark.yml``.

Three modes (docs/engine.md: what the embedded engine lacks, and what the code does about it):

- ``embedded``: pysail's Spark Connect server in this process on a free loopback port;
- ``remote``: an existing Spark Connect endpoint (``SPARK_REMOTE`` or ``remote.url``);
- ``classic``: a local JVM Spark with delta-spark, only where the Delta jars exist locally.

kedro-datasets' Spark datasets call ``SparkSession.builder.getOrCreate()``, which finds a Connect
session only through the ``SPARK_REMOTE`` environment variable, so the engine sets it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

MODES = ("embedded", "remote", "classic")


class EngineError(RuntimeError):
    """The Spark engine could not be started as configured."""


@dataclass(frozen=True)
class EngineConfig:
    """What ``spark.yml`` says about the engine."""

    mode: str = "embedded"
    app_name: str = "lakehouse_ml"
    spark_conf: dict[str, str] = field(default_factory=dict)
    remote_url: str | None = None
    embedded_host: str = "127.0.0.1"
    embedded_env: dict[str, str] = field(default_factory=dict)
    classic_master: str = "local[*]"
    classic_jars: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> EngineConfig:
        """Build the config from the ``spark`` configuration dict, checking the mode."""
        mode = str(config.get("mode", "embedded"))
        if mode not in MODES:
            raise EngineError(
                f"spark.yml: mode must be one of {', '.join(MODES)}, got {mode!r}"
            )
        embedded = config.get("embedded") or {}
        classic = config.get("classic") or {}
        remote = config.get("remote") or {}
        return cls(
            mode=mode,
            app_name=str(config.get("app_name", "lakehouse_ml")),
            spark_conf={k: str(v) for k, v in (config.get("spark_conf") or {}).items()},
            remote_url=remote.get("url"),
            embedded_host=str(embedded.get("host", "127.0.0.1")),
            embedded_env={k: str(v) for k, v in (embedded.get("env") or {}).items()},
            classic_master=str(classic.get("master", "local[*]")),
            classic_jars=tuple(classic.get("jars") or ()),
        )


def missing_classic_jars(jars: tuple[str, ...]) -> list[str]:
    """Return what classic mode lacks: no jars configured, or configured jars not on disk."""
    if not jars:
        return ["spark.yml classic.jars (paths of delta-spark and delta-storage jars)"]
    return [jar for jar in jars if not Path(jar).is_file()]


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
            self.url or config.classic_master,
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
        os.environ["SPARK_REMOTE"] = url
        return self._connect(config, url)

    def _start_classic(self, config: EngineConfig) -> SparkSession:
        missing = missing_classic_jars(config.classic_jars)
        if missing:
            raise EngineError(
                "spark.yml mode 'classic' needs the Delta Lake jars on local disk (Maven is "
                f"not reachable to download them); missing: {', '.join(missing)}"
            )
        # A Connect URL in the environment would turn the builder into a Connect client.
        os.environ.pop("SPARK_REMOTE", None)
        builder = (
            SparkSession.builder.master(config.classic_master)
            .appName(config.app_name)
            .config("spark.jars", ",".join(config.classic_jars))
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config(
                "spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            )
        )
        for key, value in config.spark_conf.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()

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
