"""A local Apache Spark cluster with Delta Lake behind Spark Connect, on loopback.

One standalone master, N worker processes and a Spark Connect server that submits to the master,
all from the Spark that the ``pyspark`` package ships (``pyspark/bin/spark-class``,
``spark-submit``). Delta Lake's jars are resolved from Maven Central with the same coordinate and
cache as classic mode (``conf/base/spark.yml`` ``classic.delta_package`` / ``classic.ivy_dir``).

    python -m lakehouse_ml.cluster start [--workers 2] [--connect-port 15002] [--state-dir DIR]
    python -m lakehouse_ml.cluster status
    python -m lakehouse_ml.cluster stop

``start`` writes each process's pid to ``<state-dir>/pids.json`` and its output to
``<state-dir>/logs/<name>.log``; ``stop`` ends exactly those processes. Point the project at it with
``SPARK_REMOTE=sc://127.0.0.1:15002`` and ``--env cluster`` (``conf/cluster/spark.yml``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyspark

from lakehouse_ml import capabilities
from lakehouse_ml.engine import (
    DEFAULT_IVY_DIR,
    DELTA_PACKAGE_EXCLUDES,
    DELTA_SPARK_CONF,
    EngineError,
    connect_error,
    delta_package,
    java_executable,
)

logger = logging.getLogger(__name__)

SPARK_HOME = Path(pyspark.__file__).parent
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
HOST = "127.0.0.1"


class ClusterError(RuntimeError):
    """The local cluster could not be started, inspected or stopped."""


@dataclass(frozen=True)
class ClusterConfig:
    """Sizes and ports of the local cluster; small by default (2 cores, shared with CI)."""

    state_dir: Path = Path("data/cluster")
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    executor_memory: str = "768m"
    driver_memory: str = "1g"
    daemon_memory: str = "256m"  # master and worker daemons only schedule; they need little heap
    master_port: int = 7077
    connect_port: int = 15002
    delta_package: str | None = None
    ivy_dir: str = DEFAULT_IVY_DIR
    start_timeout: float = 300.0  # a first start downloads Delta's jars
    extra_conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Absolute: the daemons run with the state dir as their cwd, where a relative path would
        # point below itself.
        object.__setattr__(self, "state_dir", Path(self.state_dir).resolve())

    @property
    def master_url(self) -> str:
        """The standalone master's URL."""
        return f"spark://{HOST}:{self.master_port}"

    @property
    def remote_url(self) -> str:
        """The Spark Connect URL for ``SPARK_REMOTE``."""
        return f"sc://{HOST}:{self.connect_port}"

    @property
    def log_dir(self) -> Path:
        """Where each process's output goes."""
        return self.state_dir / "logs"

    @property
    def pid_file(self) -> Path:
        """The processes this cluster started, by name."""
        return self.state_dir / "pids.json"


def project_classic_settings(root: Path) -> dict[str, str]:
    """``classic.delta_package`` and ``classic.ivy_dir`` from ``<root>/conf/base/spark.yml``, if any."""
    spark_yml = root / "conf" / "base" / "spark.yml"
    if not spark_yml.is_file():
        return {}
    import yaml

    classic = (yaml.safe_load(spark_yml.read_text()) or {}).get("classic") or {}
    return {k: str(classic[k]) for k in ("delta_package", "ivy_dir") if classic.get(k)}


def port_answers(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    return connect_error(host, port, timeout) is None


def _pid_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def read_pids(config: ClusterConfig) -> dict[str, dict]:
    """The processes recorded by ``start``: name -> {pid, cls, log}."""
    if not config.pid_file.is_file():
        return {}
    return json.loads(config.pid_file.read_text())["processes"]


def _ours(entry: dict) -> bool:
    # A recorded pid may have been reused by an unrelated process after a reboot or crash: only a
    # live process whose command line still names the Spark class we started is ours.
    return _pid_alive(entry["pid"]) and entry["cls"] in _cmdline(entry["pid"])


def _process_env(config: ClusterConfig, daemon: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SPARK_REMOTE", None)  # spark-submit would otherwise try to be a Connect client
    env["SPARK_HOME"] = str(SPARK_HOME)
    env["SPARK_LOCAL_IP"] = HOST
    # Spark's launcher sizes the Connect server by SPARK_DAEMON_MEMORY too (it is a "server"
    # class), and a driver needs more than 450 MB: only the master and workers get the small heap.
    if daemon:
        env["SPARK_DAEMON_MEMORY"] = config.daemon_memory
    else:
        env.pop("SPARK_DAEMON_MEMORY", None)
    env["SPARK_LOG_DIR"] = str(config.log_dir)
    # Executors' Python workers run this interpreter, and import this project's package from the
    # same source tree as the client (UDFs are pickled by reference to lakehouse_ml modules).
    env["PYSPARK_PYTHON"] = sys.executable
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _launch(config: ClusterConfig, name: str, cls: str, argv: list[str]) -> dict:
    log = config.log_dir / f"{name}.log"
    with log.open("wb") as out:
        # A session of its own: Ctrl-C in the shell that started the cluster does not kill it.
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_process_env(config, daemon=cls != CONNECT_SERVER_CLASS),
            cwd=config.state_dir,
            start_new_session=True,
        )
    logger.info("started %s (pid %d), log %s", name, process.pid, log)
    return {"pid": process.pid, "cls": cls, "log": str(log)}


def _wait_for(what: str, ready, entry: dict, deadline: float, hint: str = "") -> None:
    """Poll ``ready()`` until it holds; fail naming the log if the process dies or time runs out."""
    while time.monotonic() < deadline:
        if ready():
            return
        if not _pid_alive(entry["pid"]):
            raise ClusterError(f"{what}: the process exited{_diagnosis(entry)}; see {entry['log']}")
        time.sleep(0.5)
    raise ClusterError(f"{what}: not ready in time{hint}{_diagnosis(entry)}; see {entry['log']}")


def _diagnosis(entry: dict) -> str:
    """The first known cause found in a process's log, phrased for the reader."""
    try:
        text = Path(entry["log"]).read_text(errors="replace")
    except OSError:
        return ""
    causes = {
        "unresolved dependency": " (Delta Lake's package could not be resolved from Maven Central)",
        "Address already in use": " (a port it needs is already in use)",
        "BindException": " (a port it needs is already in use)",
        "OutOfMemoryError": " (out of memory: raise the process's memory setting)",
        "ClassNotFoundException": " (a class is missing from the classpath)",
    }
    for needle, cause in causes.items():
        if needle in text:
            return cause
    return ""


def _log_contains(path: str, needle: str, count: int = 1) -> bool:
    try:
        return Path(path).read_text(errors="replace").count(needle) >= count
    except OSError:
        return False


def connect_server_argv(config: ClusterConfig) -> list[str]:
    """``spark-submit`` arguments that start the Connect server on the cluster, Delta enabled."""
    conf = {
        "spark.connect.grpc.binding.address": HOST,
        "spark.connect.grpc.binding.port": str(config.connect_port),
        "spark.driver.host": HOST,
        "spark.driver.bindAddress": HOST,
        "spark.driver.memory": config.driver_memory,
        "spark.executor.memory": config.executor_memory,
        "spark.executor.cores": str(config.worker_cores),
        "spark.jars.ivy": str(Path(config.ivy_dir).expanduser()),
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.ui.enabled": "false",
        **DELTA_SPARK_CONF,
        **config.extra_conf,
    }
    argv = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master",
        config.master_url,
        "--class",
        CONNECT_SERVER_CLASS,
        "--name",
        "lakehouse_ml Spark Connect server",
        "--packages",
        delta_package(config.delta_package),
        "--exclude-packages",
        ",".join(DELTA_PACKAGE_EXCLUDES),
    ]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    # spark-internal: the server's classes are in pyspark/jars already (spark-connect_2.13-*.jar).
    return [*argv, "spark-internal"]


def start(config: ClusterConfig) -> dict[str, dict]:
    """Start master, workers and Connect server; wait until each is ready; return their pids."""
    started_at = time.monotonic()
    java_executable()  # names JAVA_HOME / PATH if there is no Java
    if any(_ours(e) for e in read_pids(config).values()):
        raise ClusterError(
            f"a cluster from {config.pid_file} is already running; stop it first (python -m lakehouse_ml.cluster stop)"
        )
    for what, port in (("master", config.master_port), ("Spark Connect", config.connect_port)):
        if port_answers(port):
            raise ClusterError(
                f"port {HOST}:{port} for the {what} is already in use; stop what listens there "
                f"or choose another port (--{'master' if what == 'master' else 'connect'}-port)"
            )
    config.log_dir.mkdir(parents=True, exist_ok=True)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    processes: dict[str, dict] = {}
    deadline = time.monotonic() + config.start_timeout

    def record() -> None:
        config.pid_file.write_text(
            json.dumps(
                {
                    "remote_url": config.remote_url,
                    "master_url": config.master_url,
                    "config": {k: str(v) for k, v in asdict(config).items()},
                    "processes": processes,
                },
                indent=2,
            )
        )

    try:
        processes["master"] = _launch(
            config,
            "master",
            MASTER_CLASS,
            [spark_class, MASTER_CLASS, "--host", HOST, "--port", str(config.master_port), "--webui-port", "0"],
        )
        record()
        _wait_for("master", lambda: port_answers(config.master_port), processes["master"], deadline)
        for i in range(1, config.workers + 1):
            work_dir = config.state_dir / f"worker-{i}"
            work_dir.mkdir(exist_ok=True)
            processes[f"worker-{i}"] = _launch(
                config,
                f"worker-{i}",
                WORKER_CLASS,
                [
                    spark_class,
                    WORKER_CLASS,
                    "--host",
                    HOST,
                    "--webui-port",
                    "0",
                    "--cores",
                    str(config.worker_cores),
                    "--memory",
                    config.worker_memory,
                    "--work-dir",
                    str(work_dir),
                    config.master_url,
                ],
            )
            record()
        for i in range(1, config.workers + 1):
            entry = processes[f"worker-{i}"]
            _wait_for(
                f"worker-{i}",
                lambda entry=entry: _log_contains(entry["log"], "Successfully registered with master"),
                entry,
                deadline,
            )
        processes["connect"] = _launch(config, "connect", CONNECT_SERVER_CLASS, connect_server_argv(config))
        record()
        _wait_for(
            f"Spark Connect server on port {config.connect_port}",
            lambda: port_answers(config.connect_port),
            processes["connect"],
            deadline,
            hint=f" ({config.start_timeout:.0f} s; a first start downloads Delta's jars)",
        )
    except BaseException:
        _stop_processes(processes)
        config.pid_file.unlink(missing_ok=True)
        raise
    logger.info("cluster ready in %.1f s", time.monotonic() - started_at)
    return processes


def _stop_processes(processes: dict[str, dict], timeout: float = 30.0) -> list[str]:
    """SIGTERM each of our processes (Connect server first), SIGKILL what is left; return names."""
    stopped = []
    order = sorted(processes, key=lambda n: {"connect": 0, "master": 2}.get(n, 1))
    for name in order:
        entry = processes[name]
        if _ours(entry):
            os.kill(entry["pid"], signal.SIGTERM)
            stopped.append(name)
    deadline = time.monotonic() + timeout
    for name in stopped:
        pid = processes[name]["pid"]
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _pid_alive(pid) and _ours(processes[name]):
            logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, pid)
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
    return stopped


def _reap(pid: int) -> None:
    # When this process started the child (start() failing, or tests), it must be reaped or it
    # stays a zombie that still looks alive to os.kill(pid, 0).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(config: ClusterConfig) -> list[str]:
    """Stop exactly the processes that ``start`` recorded in the state folder."""
    stopped = _stop_processes(read_pids(config))
    config.pid_file.unlink(missing_ok=True)
    return stopped


def status(config: ClusterConfig) -> dict[str, bool]:
    """Each recorded process: whether it is still running."""
    return {name: _ours(entry) for name, entry in read_pids(config).items()}


def check_delta(remote_url: str) -> None:
    """Ask the Connect server for its SQL extensions; fail if Delta Lake's is not among them."""
    from pyspark.sql import SparkSession

    # create(), not getOrCreate(): that would return (and then stop) any session of this process.
    session = SparkSession.builder.remote(remote_url).create()
    try:
        capabilities.check_delta(session, remote_url)
    except capabilities.EngineCapabilityError as error:
        raise ClusterError(str(error)) from None
    finally:
        session.stop()


def _config_from_args(args: argparse.Namespace) -> ClusterConfig:
    classic = project_classic_settings(Path.cwd())
    return ClusterConfig(
        state_dir=Path(args.state_dir).resolve(),
        workers=args.workers,
        worker_cores=args.worker_cores,
        worker_memory=args.worker_memory,
        master_port=args.master_port,
        connect_port=args.connect_port,
        delta_package=args.delta_package or classic.get("delta_package"),
        ivy_dir=classic.get("ivy_dir", DEFAULT_IVY_DIR),
        start_timeout=args.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``start``, ``stop`` or ``status`` of the local cluster; one summary line each."""
    parser = argparse.ArgumentParser(prog="python -m lakehouse_ml.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("LAKEHOUSE_CLUSTER_DIR", "data/cluster"),
        help="pids and logs (default data/cluster, or $LAKEHOUSE_CLUSTER_DIR)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-cores", type=int, default=1)
    parser.add_argument("--worker-memory", default="1g")
    parser.add_argument("--master-port", type=int, default=7077)
    parser.add_argument("--connect-port", type=int, default=15002)
    parser.add_argument(
        "--delta-package",
        default=None,
        help="Maven coordinate of delta-spark (default: spark.yml classic.delta_package)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = _config_from_args(args)
    try:
        if args.command == "start":
            began = time.monotonic()
            processes = start(config)
            try:
                check_delta(config.remote_url)
            except Exception:
                stop(config)
                raise
            pids = " ".join(f"{n}={e['pid']}" for n, e in processes.items())
            print(
                f"cluster up in {time.monotonic() - began:.0f} s: SPARK_REMOTE={config.remote_url} "
                f"master={config.master_url} workers={config.workers} ({pids}); "
                f"logs in {config.log_dir}"
            )
        elif args.command == "stop":
            stopped = stop(config)
            print(f"cluster stopped: {', '.join(stopped) or 'nothing was running'} ({config.state_dir})")
        else:
            states = status(config)
            running = [n for n, up in states.items() if up]
            down = [n for n, up in states.items() if not up]
            serving = port_answers(config.connect_port)
            print(
                f"cluster {'up' if running and not down and serving else 'down' if not running else 'degraded'}: "
                f"running {', '.join(running) or '-'}; not running {', '.join(down) or '-'}; "
                f"{config.remote_url} {'answers' if serving else 'does not answer'}"
            )
            return 0 if running and not down and serving else 1
    except (ClusterError, EngineError) as error:
        print(f"cluster {args.command} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
